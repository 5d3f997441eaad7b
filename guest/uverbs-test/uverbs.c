// SPDX-License-Identifier: GPL-2.0
/* uverbs.c: the uverbs write() commands the guest programs send, one function per command. */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "uverbs.h"

/* The largest command or answer sent here, header and driver data included (CREATE_QP: 88). */
#define UV_MAX_BYTES 256

int uv_cmd(int fd, uint32_t command, void *req, size_t len, size_t out_len)
{
	struct ib_uverbs_cmd_hdr *hdr = req;

	hdr->command = command;
	hdr->in_words = len / 4;
	hdr->out_words = out_len / 4;
	if (write(fd, req, len) != (ssize_t)len)
		return -errno;
	return 0;
}

/*
 * The write() ABI's layout in one place: the header, the core command, then the driver's input
 * (udata); the kernel writes the core answer and the driver's output after it to the address in
 * the command's first field, which every command with an answer has.
 */
static int uv_call(int fd, uint32_t command, const void *cmd, size_t cmd_len, const void *drv, size_t drv_len,
		   void *out, size_t out_len, void *drv_out, size_t drv_out_len)
{
	union {
		struct ib_uverbs_cmd_hdr hdr;
		uint8_t bytes[UV_MAX_BYTES];
	} req;
	uint64_t resp[UV_MAX_BYTES / 8];
	size_t len = sizeof(req.hdr) + cmd_len + drv_len;
	int err;

	if (len > sizeof(req) || out_len + drv_out_len > sizeof(resp) ||
	    (out_len + drv_out_len && cmd_len < sizeof(uint64_t)))
		return -EINVAL;
	memset(&req, 0, sizeof(req));
	memset(resp, 0, sizeof(resp));
	memcpy(req.bytes + sizeof(req.hdr), cmd, cmd_len);
	if (drv_len)
		memcpy(req.bytes + sizeof(req.hdr) + cmd_len, drv, drv_len);
	if (out_len + drv_out_len) {
		uint64_t at = (uintptr_t)resp;

		memcpy(req.bytes + sizeof(req.hdr), &at, sizeof(at));
	}
	err = uv_cmd(fd, command, &req, len, out_len + drv_out_len);
	if (err)
		return err;
	if (out_len)
		memcpy(out, resp, out_len);
	if (drv_out_len)
		memcpy(drv_out, (uint8_t *)resp + out_len, drv_out_len);
	return 0;
}

int uv_get_context(int fd, unsigned int num_uars, struct vrnic_alloc_ucontext_resp *out, int *async_fd)
{
	struct ib_uverbs_get_context cmd = { 0 };
	struct vrnic_alloc_ucontext_req drv = { .num_uars = num_uars };
	struct ib_uverbs_get_context_resp core;
	int err;

	err = uv_call(fd, IB_USER_VERBS_CMD_GET_CONTEXT, &cmd, sizeof(cmd), &drv, sizeof(drv),
		      &core, sizeof(core), out, sizeof(*out));
	if (!err && async_fd)
		*async_fd = core.async_fd;
	return err;
}

int uv_query_device(int fd, struct ib_uverbs_query_device_resp *out)
{
	struct ib_uverbs_query_device cmd = { 0 };

	memset(out, 0, sizeof(*out));
	return uv_call(fd, IB_USER_VERBS_CMD_QUERY_DEVICE, &cmd, sizeof(cmd), NULL, 0, out, sizeof(*out), NULL, 0);
}

int uv_query_port(int fd, uint8_t port, struct ib_uverbs_query_port_resp *out)
{
	struct ib_uverbs_query_port cmd = { .port_num = port };

	memset(out, 0, sizeof(*out));
	return uv_call(fd, IB_USER_VERBS_CMD_QUERY_PORT, &cmd, sizeof(cmd), NULL, 0, out, sizeof(*out), NULL, 0);
}

int uv_alloc_pd(int fd, uint32_t *pd_handle, uint32_t *pdn)
{
	struct ib_uverbs_alloc_pd cmd = { 0 };
	struct ib_uverbs_alloc_pd_resp core;
	struct vrnic_alloc_pd_resp drv;
	int err;

	err = uv_call(fd, IB_USER_VERBS_CMD_ALLOC_PD, &cmd, sizeof(cmd), NULL, 0, &core, sizeof(core), &drv, sizeof(drv));
	if (err)
		return err;
	*pd_handle = core.pd_handle;
	*pdn = drv.pdn;
	return 0;
}

int uv_dealloc_pd(int fd, uint32_t pd_handle)
{
	struct ib_uverbs_dealloc_pd cmd = { .pd_handle = pd_handle };

	return uv_call(fd, IB_USER_VERBS_CMD_DEALLOC_PD, &cmd, sizeof(cmd), NULL, 0, NULL, 0, NULL, 0);
}

int uv_reg_mr(int fd, uint32_t pd_handle, uintptr_t start, size_t len, uint32_t access,
	      struct ib_uverbs_reg_mr_resp *out)
{
	struct ib_uverbs_reg_mr cmd = {
		.start = start,
		.length = len,
		.hca_va = start,
		.pd_handle = pd_handle,
		.access_flags = access,
	};

	memset(out, 0, sizeof(*out));
	return uv_call(fd, IB_USER_VERBS_CMD_REG_MR, &cmd, sizeof(cmd), NULL, 0, out, sizeof(*out), NULL, 0);
}

int uv_dereg_mr(int fd, uint32_t mr_handle)
{
	struct ib_uverbs_dereg_mr cmd = { .mr_handle = mr_handle };

	return uv_call(fd, IB_USER_VERBS_CMD_DEREG_MR, &cmd, sizeof(cmd), NULL, 0, NULL, 0, NULL, 0);
}

int uv_create_comp_channel(int fd)
{
	struct ib_uverbs_create_comp_channel cmd = { 0 };
	struct ib_uverbs_create_comp_channel_resp resp;
	int err;

	err = uv_call(fd, IB_USER_VERBS_CMD_CREATE_COMP_CHANNEL, &cmd, sizeof(cmd), NULL, 0,
		      &resp, sizeof(resp), NULL, 0);
	return err ? err : (int)resp.fd;
}

int uv_create_cq(int fd, volatile void *ring, uint32_t cqe, int comp_channel, uint64_t user_handle,
		 uint32_t *cq_handle, struct vrnic_create_cq_resp *out)
{
	struct ib_uverbs_create_cq cmd = {
		.user_handle = user_handle,
		.cqe = cqe,
		.comp_channel = comp_channel,
	};
	struct vrnic_create_cq_req drv = { .buf_addr = (uintptr_t)ring };
	struct ib_uverbs_create_cq_resp core;
	int err;

	err = uv_call(fd, IB_USER_VERBS_CMD_CREATE_CQ, &cmd, sizeof(cmd), &drv, sizeof(drv),
		      &core, sizeof(core), out, sizeof(*out));
	if (!err)
		*cq_handle = core.cq_handle;
	return err;
}

int uv_create_rc_qp(int fd, uint32_t pd_handle, uint32_t cq_handle, volatile void *sq_ring, uint32_t max_send_wr,
		    volatile void *rq_ring, uint32_t max_recv_wr, uint32_t *qp_handle, struct vrnic_create_qp_resp *out)
{
	struct ib_uverbs_create_qp cmd = {
		.pd_handle = pd_handle,
		.send_cq_handle = cq_handle,
		.recv_cq_handle = cq_handle,
		.max_send_wr = max_send_wr,
		.max_recv_wr = max_recv_wr,
		.max_send_sge = max_send_wr ? 1 : 0,
		.max_recv_sge = max_recv_wr ? 1 : 0,
		.qp_type = IB_UVERBS_QPT_RC,
	};
	struct vrnic_create_qp_req drv = { .sq_addr = (uintptr_t)sq_ring, .rq_addr = (uintptr_t)rq_ring };
	struct ib_uverbs_create_qp_resp core;
	int err;

	err = uv_call(fd, IB_USER_VERBS_CMD_CREATE_QP, &cmd, sizeof(cmd), &drv, sizeof(drv),
		      &core, sizeof(core), out, sizeof(*out));
	if (!err)
		*qp_handle = core.qp_handle;
	return err;
}

int uv_destroy_cq(int fd, uint32_t cq_handle)
{
	struct ib_uverbs_destroy_cq cmd = { .cq_handle = cq_handle };
	struct ib_uverbs_destroy_cq_resp resp;

	return uv_call(fd, IB_USER_VERBS_CMD_DESTROY_CQ, &cmd, sizeof(cmd), NULL, 0, &resp, sizeof(resp), NULL, 0);
}

int uv_destroy_qp(int fd, uint32_t qp_handle)
{
	struct ib_uverbs_destroy_qp cmd = { .qp_handle = qp_handle };
	struct ib_uverbs_destroy_qp_resp resp;

	return uv_call(fd, IB_USER_VERBS_CMD_DESTROY_QP, &cmd, sizeof(cmd), NULL, 0, &resp, sizeof(resp), NULL, 0);
}

int uv_modify_qp(int fd, const struct ib_uverbs_modify_qp *cmd)
{
	return uv_call(fd, IB_USER_VERBS_CMD_MODIFY_QP, cmd, sizeof(*cmd), NULL, 0, NULL, 0, NULL, 0);
}

int uv_modify_qp_state(int fd, uint32_t qp_handle, uint8_t state)
{
	struct ib_uverbs_modify_qp cmd;

	memset(&cmd, 0, sizeof(cmd));
	cmd.qp_handle = qp_handle;
	cmd.attr_mask = UV_QP_STATE;
	cmd.qp_state = state;
	return uv_modify_qp(fd, &cmd);
}
