/* SPDX-License-Identifier: GPL-2.0 */
/* uverbs.h: the uverbs write() commands the guest programs send, with vrnic's driver data (no rdma-core). */
#ifndef VRNIC_UVERBS_H
#define VRNIC_UVERBS_H

#include <stddef.h>
#include <stdint.h>

#include <rdma/ib_user_verbs.h>
#include <rdma/ib_user_ioctl_verbs.h>
#include "vrnic-abi.h"

/*
 * MODIFY_QP attribute bits: Linux's IB_QP_* (include/rdma/ib_verbs.h), which the uverbs ABI
 * carries in attr_mask but no uapi header defines.
 */
#define UV_QP_STATE		0x1u
#define UV_QP_ACCESS_FLAGS	0x8u
#define UV_QP_PKEY_INDEX	0x10u
#define UV_QP_PORT		0x20u
#define UV_QP_AV		0x80u
#define UV_QP_PATH_MTU		0x100u
#define UV_QP_TIMEOUT		0x200u
#define UV_QP_RETRY_CNT		0x400u
#define UV_QP_RNR_RETRY		0x800u
#define UV_QP_RQ_PSN		0x1000u
#define UV_QP_MAX_QP_RD_ATOMIC	0x2000u
#define UV_QP_MIN_RNR_TIMER	0x8000u
#define UV_QP_SQ_PSN		0x10000u
#define UV_QP_MAX_DEST_RD_ATOMIC 0x20000u
#define UV_QP_DEST_QPN		0x100000u

/* QP states (Linux's enum ib_qp_state), as MODIFY_QP takes them. */
enum { UV_QPS_INIT = 1, UV_QPS_RTR = 2, UV_QPS_RTS = 3 };

/*
 * Every call returns 0 or a negative errno: write(2)'s, so EIO once the device is
 * disassociated. A write() from a process other than the fd's opener fails (uverbs checks creds).
 */

/* One command: header filled in here, `req` starts with struct ib_uverbs_cmd_hdr. */
int uv_cmd(int fd, uint32_t command, void *req, size_t len, size_t out_len);

/* GET_CONTEXT asking for num_uars UAR pages; async_fd may be NULL. */
int uv_get_context(int fd, unsigned int num_uars, struct vrnic_alloc_ucontext_resp *out, int *async_fd);

/* QUERY_DEVICE: works on a live context, EIO after disassociation (the cheap "still there?"). */
int uv_query_device(int fd, struct ib_uverbs_query_device_resp *out);

int uv_query_port(int fd, uint8_t port, struct ib_uverbs_query_port_resp *out);

int uv_alloc_pd(int fd, uint32_t *pd_handle, uint32_t *pdn);
int uv_dealloc_pd(int fd, uint32_t pd_handle);

/* REG_MR of [start, start + len) at iova start. */
int uv_reg_mr(int fd, uint32_t pd_handle, uintptr_t start, size_t len, uint32_t access,
	      struct ib_uverbs_reg_mr_resp *out);
int uv_dereg_mr(int fd, uint32_t mr_handle);

/* The fd of a new completion channel, or a negative errno. */
int uv_create_comp_channel(int fd);

/*
 * CREATE_CQ of cqe entries on a ring of one page in this process's memory; completion events
 * (comp_channel >= 0, else -1) name the CQ by user_handle. The handle and the driver's answer
 * come back.
 */
int uv_create_cq(int fd, volatile void *ring, uint32_t cqe, int comp_channel, uint64_t user_handle,
		 uint32_t *cq_handle, struct vrnic_create_cq_resp *out);

/* CREATE_QP of an RC QP with one SGE per WQE, both queues on one CQ; max_recv_wr 0: no RQ. */
int uv_create_rc_qp(int fd, uint32_t pd_handle, uint32_t cq_handle, volatile void *sq_ring, uint32_t max_send_wr,
		    volatile void *rq_ring, uint32_t max_recv_wr, uint32_t *qp_handle, struct vrnic_create_qp_resp *out);

int uv_destroy_cq(int fd, uint32_t cq_handle);
int uv_destroy_qp(int fd, uint32_t qp_handle);

/* MODIFY_QP with `cmd` as the caller filled it. */
int uv_modify_qp(int fd, const struct ib_uverbs_modify_qp *cmd);

/* MODIFY_QP of the state alone (what a QP on no wire needs to reach RTS). */
int uv_modify_qp_state(int fd, uint32_t qp_handle, uint8_t state);

#endif /* VRNIC_UVERBS_H */
