// SPDX-License-Identifier: GPL-2.0
/* test-datapath.c: vrnic-test's verbs objects held across the unplug: PD, MR, and a CQ and QP that run NOPs. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "report.h"
#include "uverbs.h"
#include "vrnic-test.h"

/* A PD and an MR held across the unplug, so their destruction is part of the removal. */
void verbs_setup(int fd, struct verbs *v)
{
	struct ib_uverbs_reg_mr_resp mr_resp;
	size_t page = VRNIC_USER_RING_BYTES;
	int pd_err, mr_err = 0;

	memset(v, 0, sizeof(*v));
	pd_err = uv_alloc_pd(fd, &v->pd_handle, &v->pdn);
	if (!pd_err) {
		v->have_pd = true;
		/* Three pages, starting 100 bytes into the first: a page list with an offset. */
		v->len = 2 * page;
		v->buf = aligned_alloc(page, 3 * page);
		memset(v->buf, 0x5a, 3 * page);
		mr_err = uv_reg_mr(fd, v->pd_handle, (uintptr_t)v->buf + 100, v->len,
				   IB_UVERBS_ACCESS_LOCAL_WRITE | IB_UVERBS_ACCESS_REMOTE_READ, &mr_resp);
		if (!mr_err) {
			v->have_mr = true;
			v->mr_handle = mr_resp.mr_handle;
			v->lkey = mr_resp.lkey;
			v->rkey = mr_resp.rkey;
		}
	}
	report(NULL, "verbs", "\"alloc_pd_errno\":%d,\"pdn\":%u,\"reg_mr_errno\":%d,\"lkey\":\"0x%x\",\"rkey\":\"0x%x\"",
	       -pd_err, v->pdn, -mr_err, v->lkey, v->rkey);
}

void verbs_teardown(int fd, struct verbs *v)
{
	int mr_err = 0, pd_err = 0;

	if (!v->have_pd)
		return;
	if (v->have_mr)
		mr_err = uv_dereg_mr(fd, v->mr_handle);
	pd_err = uv_dealloc_pd(fd, v->pd_handle);
	/*
	 * Destroy commands succeed even after disassociation: the core destroyed the hardware
	 * objects then and only lets user space release its handles now.
	 */
	report(NULL, "verbs-teardown", "\"dereg_mr_errno\":%d,\"dealloc_pd_errno\":%d", -mr_err, -pd_err);
	free(v->buf);
	v->have_pd = v->have_mr = false;
}

/* The CQ and the SQ hold this many entries (the device takes one page per ring). */
#define DATAPATH_RING_WQES 64

/* A completion event names its CQ by this value (ibv_cq's cq_context in libibverbs). */
#define COMP_EVENT_CQ_TAG 0x7a01c0ffeeULL

/* The NOPs' wr_ids: the first batch, then the one --comp-event posts. */
#define NOP_WR_ID 0x7a010000u
#define COMP_EVENT_WR_ID 0x7a020000u

/* Writes NOP WQE `index` of the SQ ring. */
static void write_nop(struct datapath *dp, unsigned int index, uint64_t wr_id)
{
	volatile uint8_t *w = dp->sq_ring + VRNIC_WQE_BYTES * (index % DATAPATH_RING_WQES);

	w[VRNIC_WQE_OPCODE] = VRNIC_WQE_OP_NOP;
	*(volatile uint64_t *)(w + VRNIC_WQE_WR_ID) = wr_id;
}

/*
 * --comp-event: what ibv_req_notify_cq + ibv_get_cq_event do, on the raw ABI. Arm the CQ (arm
 * word: ARM, sequence 1, the consumer index), post one more NOP, and wait on the completion
 * channel for the event the driver's comp_handler queues; it names the CQ by the user_handle.
 */
static void comp_event_run(volatile uint32_t *uar, struct datapath *dp, unsigned int ci)
{
	struct ib_uverbs_comp_event_desc ev;
	struct pollfd pfd = { .fd = dp->comp_channel, .events = POLLIN };
	double t_arm, t_event = 0;
	int n = 0, err = 0;
	ssize_t got = 0;

	memset(&ev, 0, sizeof(ev));
	uar[(dp->cq_db + VRNIC_DB_ARM_OFFSET) / 4] = VRNIC_DB_ARM | (1u << VRNIC_DB_ARM_SEQ_SHIFT) |
						     (ci & VRNIC_DB_INDEX_MASK);
	t_arm = now_ms();
	write_nop(dp, ci, COMP_EVENT_WR_ID + ci);
	__sync_synchronize();
	uar[dp->qp_db / 4] = VRNIC_DB(dp->qpn, ci + 1);
	n = poll(&pfd, 1, 5000);
	if (n < 0)
		err = -errno;
	if (n > 0) {
		got = read(dp->comp_channel, &ev, sizeof(ev));
		if (got < 0)
			err = -errno;
		t_event = now_ms();
	}
	report(NULL, "comp-event", "\"errno\":%d,\"got_event\":%s,\"cq_handle\":%llu,\"cq_handle_ok\":%s,\"arm_to_event_ms\":%.3f",
	       -err, got == sizeof(ev) ? "true" : "false", (unsigned long long)ev.cq_handle,
	       got == sizeof(ev) && ev.cq_handle == COMP_EVENT_CQ_TAG ? "true" : "false",
	       t_event ? t_event - t_arm : 0.0);
}

/*
 * The minimal data path: a user CQ and RC QP (rings in one page each), RESET -> INIT -> RTR ->
 * RTS, `nops` NOP WQEs, one SQ doorbell through the UAR mapping, and the CQEs polled from the
 * ring. The CQ and QP stay alive across the unplug like the PD and MR.
 */
void datapath_run(int fd, const struct verbs *v, volatile uint32_t *uar, struct datapath *dp)
{
	struct vrnic_create_cq_resp cq_resp;
	struct vrnic_create_qp_resp qp_resp;
	int err = 0, mod_err = 0;
	unsigned int i, done = 0, ok = 0, wr_ok = 0;
	double t0w = 0, t_done = 0;
	const char *step = "create-cq";

	memset(dp, 0, sizeof(*dp));
	dp->comp_channel = -1;
	if (!opt.nops || !v->have_pd)
		return;
	if (opt.comp_event) {
		step = "create-comp-channel";
		dp->comp_channel = uv_create_comp_channel(fd);
		if (dp->comp_channel < 0) {
			err = dp->comp_channel;
			goto out;
		}
	}
	dp->cq_ring = aligned_alloc(VRNIC_USER_RING_BYTES, VRNIC_USER_RING_BYTES);
	dp->sq_ring = aligned_alloc(VRNIC_USER_RING_BYTES, VRNIC_USER_RING_BYTES);
	memset((void *)dp->cq_ring, 0, VRNIC_USER_RING_BYTES);
	memset((void *)dp->sq_ring, 0, VRNIC_USER_RING_BYTES);

	err = uv_create_cq(fd, dp->cq_ring, DATAPATH_RING_WQES, dp->comp_channel,
			   opt.comp_event ? COMP_EVENT_CQ_TAG : 0, &dp->cq_handle, &cq_resp);
	if (err)
		goto out;
	dp->have_cq = true;
	dp->cqn = cq_resp.cqn;
	dp->cq_db = cq_resp.doorbell_offset;
	dp->cq_entries = cq_resp.entries;

	step = "create-qp";
	err = uv_create_rc_qp(fd, v->pd_handle, dp->cq_handle, dp->sq_ring, DATAPATH_RING_WQES, NULL, 0,
			      &dp->qp_handle, &qp_resp);
	if (err)
		goto out;
	dp->have_qp = true;
	dp->qpn = qp_resp.qpn;
	dp->qp_db = qp_resp.doorbell_offset;

	step = "modify-qp";
	for (i = UV_QPS_INIT; i <= UV_QPS_RTS && !mod_err; i++)
		mod_err = uv_modify_qp_state(fd, dp->qp_handle, i);
	if (mod_err) {
		err = mod_err;
		goto out;
	}

	step = "nop";
	/* The doorbells the driver hands out must lie in the page's doorbell half. */
	if (dp->qp_db >= VRNIC_UAR_DOORBELL_END || dp->cq_db >= VRNIC_UAR_DOORBELL_END) {
		err = -EPROTO;
		goto out;
	}
	for (i = 0; i < opt.nops && i < DATAPATH_RING_WQES; i++)
		write_nop(dp, i, NOP_WR_ID + i);
	__sync_synchronize();
	t0w = now_ms();
	uar[dp->qp_db / 4] = VRNIC_DB(dp->qpn, i);
	/* The device polls the UAR page: give it a bounded while to answer. */
	while (done < i && now_ms() - t0w < 3000) {
		volatile uint8_t *e = dp->cq_ring + VRNIC_CQE_BYTES * done;

		if (!(*(volatile uint32_t *)(e + VRNIC_CQE_FLAGS_WORD) & VRNIC_CQE_PHASE)) {
			usleep(200);
			continue;
		}
		__sync_synchronize();
		if (e[VRNIC_CQE_STATUS] == 0)
			ok++;
		if (*(volatile uint64_t *)(e + VRNIC_CQE_WR_ID) == NOP_WR_ID + done &&
		    *(volatile uint32_t *)(e + VRNIC_CQE_QPN) == dp->qpn)
			wr_ok++;
		done++;
	}
	t_done = now_ms();
	/* Hand the slots back: the CQ doorbell carries the consumer index. */
	uar[dp->cq_db / 4] = VRNIC_DB(dp->cqn, done);
	err = done == i ? 0 : -ETIMEDOUT;
	if (!err && opt.comp_event)
		comp_event_run(uar, dp, done);
out:
	report(NULL, "nop", "\"step\":\"%s\",\"errno\":%d,\"cqn\":%u,\"qpn\":%u,\"cq_doorbell\":\"0x%x\",\"qp_doorbell\":\"0x%x\",\"posted\":%u,\"completed\":%u,\"status_ok\":%u,\"wr_id_ok\":%u,\"doorbell_to_last_cqe_ms\":%.3f",
	       err ? step : "done", -err, dp->cqn, dp->qpn, dp->cq_db, dp->qp_db,
	       opt.nops < DATAPATH_RING_WQES ? opt.nops : DATAPATH_RING_WQES, done, ok, wr_ok, t0w ? t_done - t0w : 0.0);
}

void datapath_teardown(int fd, struct datapath *dp)
{
	int qp_err = 0, cq_err = 0;

	if (dp->have_cq) {
		if (dp->have_qp)
			qp_err = uv_destroy_qp(fd, dp->qp_handle);
		cq_err = uv_destroy_cq(fd, dp->cq_handle);
		report(NULL, "nop-teardown", "\"destroy_qp_errno\":%d,\"destroy_cq_errno\":%d", -qp_err, -cq_err);
	}
	free((void *)dp->cq_ring);
	free((void *)dp->sq_ring);
	dp->cq_ring = dp->sq_ring = NULL;
	if (dp->comp_channel >= 0)
		close(dp->comp_channel);
	dp->comp_channel = -1;
	dp->have_cq = dp->have_qp = false;
}
