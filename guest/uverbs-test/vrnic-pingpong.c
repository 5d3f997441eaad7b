// SPDX-License-Identifier: GPL-2.0
/*
 * vrnic-pingpong: two processes in one guest connect RC QPs through the vrnic device and run a
 * SEND ping-pong, then RDMA WRITE and RDMA READ with every byte verified; with --traffic the
 * ping-pong runs until the device goes away and the program must end by error completions or
 * EIO, never hang.
 *
 * Like vrnic-test it speaks the uverbs write() ABI directly (no rdma-core) and posts WQEs into
 * rings in its own memory, ringing doorbells through the mapped UAR page (docs/device.md 7).
 * Reports are `VRNIC-TEST {json}` lines, one write(2) each. Exit codes: 0 done (or, with
 * --traffic, ended cleanly by the device's removal), 1 a step or a verification failed, 2 bad
 * usage, 3 no vrnic device, 5 the peer process failed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "device.h"
#include "report.h"
#include "uverbs.h"

/* The largest message, and where in the MR the answer to a message lands. */
#define MSG_MAX 4096u
#define ANSWER_OFF MSG_MAX
#define BUF_BYTES (64u * 1024u)	/* the MR: ping-pong slots, then the WRITE and READ regions */
#define XFER_OFF (16u * 1024u)	/* where WRITE lands in the responder's MR */
#define READ_OFF (32u * 1024u)	/* what READ fetches from the responder's MR */
#define LAND_OFF (48u * 1024u)	/* where READ lands in the requester's MR */
#define XFER_MAX (16u * 1024u)

static struct {
	double wait_device_s;
	unsigned int iters;
	unsigned int size;
	bool traffic;
	double idle_ms;		/* no completion for this long: ask the device whether it is still there */
	const char *output;
	const char *role;	/* one side only (two guests): requester or responder */
	const char *peer_tty;	/* that side's line to the host, which relays the peer's endpoint */
} opt = { .wait_device_s = 5, .iters = 200, .size = 64, .traffic = false, .idle_ms = 500 };

/* The label of this process's reports: requester, responder, or main. */
static const char *role = "main";

/* ---- one side's verbs objects ------------------------------------------------------------- */

/* What one side tells the other to connect and to reach its MR. */
struct endpoint {
	uint32_t lid, qpn, psn, rkey;
	uint64_t addr;
};

/* One side's resources: a context, a PD, an MR, one CQ for both queues, one RC QP. */
struct side {
	int fd;
	volatile uint32_t *uar;
	struct vrnic_alloc_ucontext_resp ctx;
	uint32_t pd_handle, mr_handle, lkey, rkey, lid;
	uint8_t *buf;
	uint32_t cq_handle, cqn, cq_entries;
	volatile uint32_t *cq_db;
	volatile uint8_t *cq_ring;
	uint16_t cq_ci;
	uint32_t qp_handle, qpn, sq_entries, rq_entries;
	volatile uint32_t *sq_db, *rq_db;
	volatile uint8_t *sq_ring, *rq_ring;
	uint16_t sq_pi, rq_pi;
	unsigned int sends_out;	/* posted sends whose CQE has not come yet */
	bool have_cq, have_qp, have_mr, have_pd;
};

static volatile uint32_t *uar_slot(const struct side *s, uint32_t uar_index, uint32_t offset)
{
	uint32_t page = uar_index - s->ctx.uar_index;

	/* The driver's answer is trusted only as far as the mapping reaches. */
	if (uar_index < s->ctx.uar_index || page >= s->ctx.num_uars || offset >= VRNIC_UAR_DOORBELL_END || offset % 4)
		return NULL;
	return s->uar + (page * VRNIC_UAR_PAGE_SIZE + offset) / 4;
}

static void *ring_page(void)
{
	void *p = mmap(NULL, VRNIC_USER_RING_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

static int side_setup(const char *path, struct side *s, const char **step)
{
	struct ib_uverbs_query_port_resp port;
	struct ib_uverbs_reg_mr_resp mr;
	struct vrnic_create_cq_resp cq;
	struct vrnic_create_qp_resp qp;
	uint32_t pdn;
	void *p;
	int err;

	memset(s, 0, sizeof(*s));
	*step = "open";
	s->fd = open(path, O_RDWR | O_CLOEXEC);
	if (s->fd < 0)
		return -errno;

	*step = "get-context";
	err = uv_get_context(s->fd, 1, &s->ctx, NULL);
	if (err)
		return err;
	if (s->ctx.num_uars < 1 || s->ctx.num_uars > VRNIC_MAX_UARS_PER_CONTEXT)
		return -EPROTO;
	*step = "mmap";
	p = mmap(NULL, (size_t)s->ctx.num_uars * VRNIC_UAR_PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, s->fd,
		 (off_t)s->ctx.uar_mmap_offset);
	if (p == MAP_FAILED)
		return -errno;
	s->uar = p;

	*step = "query-port";
	err = uv_query_port(s->fd, 1, &port);
	if (err)
		return err;
	s->lid = port.lid;

	*step = "alloc-pd";
	err = uv_alloc_pd(s->fd, &s->pd_handle, &pdn);
	if (err)
		return err;
	s->have_pd = true;

	*step = "reg-mr";
	p = mmap(NULL, BUF_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (p == MAP_FAILED)
		return -errno;
	s->buf = p;
	err = uv_reg_mr(s->fd, s->pd_handle, (uintptr_t)s->buf, BUF_BYTES,
			IB_UVERBS_ACCESS_LOCAL_WRITE | IB_UVERBS_ACCESS_REMOTE_WRITE | IB_UVERBS_ACCESS_REMOTE_READ, &mr);
	if (err)
		return err;
	s->have_mr = true;
	s->mr_handle = mr.mr_handle;
	s->lkey = mr.lkey;
	s->rkey = mr.rkey;

	*step = "create-cq";
	s->cq_ring = ring_page();
	if (!s->cq_ring)
		return -ENOMEM;
	err = uv_create_cq(s->fd, s->cq_ring, 64, -1, 0, &s->cq_handle, &cq);
	if (err)
		return err;
	s->have_cq = true;
	s->cqn = cq.cqn;
	s->cq_entries = cq.entries;
	s->cq_db = uar_slot(s, cq.uar_index, cq.doorbell_offset);
	if (!s->cq_db || !s->cq_entries || s->cq_entries * VRNIC_CQE_BYTES > VRNIC_USER_RING_BYTES ||
	    (s->cq_entries & (s->cq_entries - 1)))
		return -EPROTO;

	*step = "create-qp";
	s->sq_ring = ring_page();
	s->rq_ring = ring_page();
	if (!s->sq_ring || !s->rq_ring)
		return -ENOMEM;
	err = uv_create_rc_qp(s->fd, s->pd_handle, s->cq_handle, s->sq_ring, 16, s->rq_ring, 16, &s->qp_handle, &qp);
	if (err)
		return err;
	s->have_qp = true;
	s->qpn = qp.qpn;
	s->sq_entries = qp.sq_entries;
	s->rq_entries = qp.rq_entries;
	s->sq_db = uar_slot(s, qp.uar_index, qp.doorbell_offset);
	s->rq_db = uar_slot(s, qp.uar_index, qp.doorbell_offset + VRNIC_DB_RQ_OFFSET);
	if (!s->sq_db || !s->rq_db || !s->sq_entries || !s->rq_entries ||
	    s->sq_entries * VRNIC_WQE_BYTES > VRNIC_USER_RING_BYTES ||
	    s->rq_entries * VRNIC_WQE_BYTES > VRNIC_USER_RING_BYTES)
		return -EPROTO;
	return 0;
}

static void side_teardown(struct side *s)
{
	int qp_err = 0, cq_err = 0, mr_err = 0, pd_err = 0;

	/* Destroy commands succeed after disassociation too: they release user space's handles. */
	if (s->have_qp)
		qp_err = uv_destroy_qp(s->fd, s->qp_handle);
	if (s->have_cq)
		cq_err = uv_destroy_cq(s->fd, s->cq_handle);
	if (s->have_mr)
		mr_err = uv_dereg_mr(s->fd, s->mr_handle);
	if (s->have_pd)
		pd_err = uv_dealloc_pd(s->fd, s->pd_handle);
	if (s->fd >= 0)
		close(s->fd);
	report(role, "teardown", "\"destroy_qp_errno\":%d,\"destroy_cq_errno\":%d,\"dereg_mr_errno\":%d,\"dealloc_pd_errno\":%d",
	       -qp_err, -cq_err, -mr_err, -pd_err);
}

static int modify_qp(struct side *s, uint8_t state, uint32_t mask, const struct endpoint *peer, uint32_t my_psn)
{
	struct ib_uverbs_modify_qp cmd;

	memset(&cmd, 0, sizeof(cmd));
	cmd.qp_handle = s->qp_handle;
	cmd.attr_mask = UV_QP_STATE | mask;
	cmd.qp_state = state;
	cmd.port_num = 1;
	cmd.qp_access_flags = IB_UVERBS_ACCESS_REMOTE_WRITE | IB_UVERBS_ACCESS_REMOTE_READ;
	cmd.path_mtu = 5;	/* IB_MTU_4096; recorded by the device */
	cmd.min_rnr_timer = 1;
	cmd.max_dest_rd_atomic = 1;
	cmd.max_rd_atomic = 1;
	cmd.timeout = 14;
	cmd.retry_cnt = 7;
	cmd.rnr_retry = 7;
	cmd.sq_psn = my_psn;
	if (peer) {
		cmd.dest.dlid = peer->lid;
		cmd.dest.port_num = 1;
		cmd.dest_qp_num = peer->qpn;
		cmd.rq_psn = peer->psn;
	}
	return uv_modify_qp(s->fd, &cmd);
}

/* ---- work requests and completions ---------------------------------------------------------- */

/* Fills one SGE of a WQE: a stretch of this side's MR. */
static void write_sge(volatile uint8_t *sge, const struct side *s, uint32_t off, uint32_t len)
{
	*(volatile uint64_t *)(sge + VRNIC_SGE_ADDR) = (uintptr_t)s->buf + off;
	*(volatile uint32_t *)(sge + VRNIC_SGE_LENGTH) = len;
	*(volatile uint32_t *)(sge + VRNIC_SGE_LKEY) = s->lkey;
}

static void post_recv(struct side *s, uint32_t off, uint32_t len, uint64_t wr_id)
{
	volatile uint8_t *w = s->rq_ring + VRNIC_WQE_BYTES * (s->rq_pi % s->rq_entries);

	memset((void *)w, 0, VRNIC_WQE_BYTES);
	*(volatile uint64_t *)(w + VRNIC_WQE_WR_ID) = wr_id;
	w[VRNIC_WQE_NUM_SGE] = 1;
	write_sge(w + VRNIC_RECV_WQE_SGE0, s, off, len);
	s->rq_pi++;
	__sync_synchronize();
	*s->rq_db = VRNIC_DB(s->qpn, s->rq_pi);
}

static void post_send(struct side *s, uint8_t opcode, uint32_t off, uint32_t len, uint64_t wr_id,
		      uint64_t raddr, uint32_t rkey)
{
	volatile uint8_t *w = s->sq_ring + VRNIC_WQE_BYTES * (s->sq_pi % s->sq_entries);

	memset((void *)w, 0, VRNIC_WQE_BYTES);
	w[VRNIC_WQE_OPCODE] = opcode;
	w[VRNIC_WQE_NUM_SGE] = 1;
	*(volatile uint64_t *)(w + VRNIC_WQE_WR_ID) = wr_id;
	*(volatile uint64_t *)(w + VRNIC_WQE_REMOTE_ADDR) = raddr;
	*(volatile uint32_t *)(w + VRNIC_WQE_RKEY) = rkey;
	write_sge(w + VRNIC_WQE_SGE0, s, off, len);
	s->sq_pi++;
	s->sends_out++;
	__sync_synchronize();
	*s->sq_db = VRNIC_DB(s->qpn, s->sq_pi);
}

struct cqe {
	uint64_t wr_id;
	uint32_t byte_len, flags;
	uint8_t opcode, status;
};

/* How a wait for a completion ended. */
enum wait_end { GOT_CQE, GONE_EIO, NO_ANSWER };

static const char *const end_names[] = { "cqe", "eio", "no-answer" };

/*
 * Waits for the next CQE. While none comes, every --idle-ms it asks the device (QUERY_DEVICE)
 * whether it is still there, so a removal ends the wait with EIO instead of a hang; a device that
 * answers but completes nothing for 30 s ends it too (NO_ANSWER), so the program never hangs.
 */
static enum wait_end next_cqe(struct side *s, struct cqe *out, int *err)
{
	struct ib_uverbs_query_device_resp qd;
	double start = now_ms(), asked = start;
	uint32_t phase = 1 - ((s->cq_ci / s->cq_entries) & 1);

	for (;;) {
		volatile uint8_t *e = s->cq_ring + VRNIC_CQE_BYTES * (s->cq_ci % s->cq_entries);
		uint32_t flags = *(volatile uint32_t *)(e + VRNIC_CQE_FLAGS_WORD);
		double t;

		if ((flags & VRNIC_CQE_PHASE) == phase) {
			__sync_synchronize();
			out->wr_id = *(volatile uint64_t *)(e + VRNIC_CQE_WR_ID);
			out->byte_len = *(volatile uint32_t *)(e + VRNIC_CQE_BYTE_LEN);
			out->opcode = e[VRNIC_CQE_OPCODE];
			out->status = e[VRNIC_CQE_STATUS];
			out->flags = flags;
			s->cq_ci++;
			*s->cq_db = VRNIC_DB(s->cqn, s->cq_ci);
			return GOT_CQE;
		}
		t = now_ms();
		if (t - asked >= opt.idle_ms) {
			asked = t;
			*err = uv_query_device(s->fd, &qd);
			if (*err)
				return GONE_EIO;
		}
		if (t - start > 30000) {
			*err = -ETIMEDOUT;
			return NO_ANSWER;
		}
		/* Spin briefly (the device answers in microseconds when busy), then yield the CPU. */
		if (t - start > 1)
			usleep(50);
	}
}

/* ---- the two sides ------------------------------------------------------------------------ */

static uint8_t pattern(uint32_t seed, uint32_t i)
{
	uint32_t x = (seed + i) * 2654435761u;

	return (uint8_t)(x >> 24);
}

static void fill(uint8_t *p, uint32_t len, uint32_t seed)
{
	for (uint32_t i = 0; i < len; i++)
		p[i] = pattern(seed, i);
}

static uint32_t mismatches(const uint8_t *p, uint32_t len, uint32_t seed)
{
	uint32_t bad = 0;

	for (uint32_t i = 0; i < len; i++)
		bad += p[i] != pattern(seed, i);
	return bad;
}

static bool write_all(int fd, const void *p, size_t len)
{
	return write(fd, p, len) == (ssize_t)len;
}

static bool read_all(int fd, void *p, size_t len)
{
	size_t got = 0;

	while (got < len) {
		ssize_t n = read(fd, (char *)p + got, len - got);

		if (n <= 0)
			return false;
		got += n;
	}
	return true;
}

struct run_state {
	unsigned int round_trips, verified_bytes, bad_bytes, error_cqes;
	uint8_t first_error_status;
	enum wait_end end;
	int end_errno;
	uint32_t last_recv_len;
};

/*
 * Consumes completions until a receive completes (want_recv) or every posted send has
 * (!want_recv). A send CQE on the way just retires its WQE; an error status ends the exchange.
 */
static bool await(struct side *s, struct run_state *st, bool want_recv)
{
	struct cqe c;

	while (want_recv || s->sends_out) {
		st->end = next_cqe(s, &c, &st->end_errno);
		if (st->end != GOT_CQE)
			return false;
		if (c.status) {
			if (!st->error_cqes++)
				st->first_error_status = c.status;
			return false;
		}
		if (c.flags & VRNIC_CQE_SEND) {
			if (s->sends_out)
				s->sends_out--;
			continue;
		}
		if (want_recv) {
			st->last_recv_len = c.byte_len;
			return true;
		}
		/* A receive nobody asked for: the peer broke the protocol. */
		st->end_errno = -EPROTO;
		return false;
	}
	return true;
}

static double mean_rtt_ms, first_rtt_ms;

/*
 * The requester: --iters round trips of --size bytes (its SEND, the responder's echo), then an
 * RDMA WRITE announced by a SEND, then an RDMA READ of what the responder put in its own MR.
 * Its MR: [0, size) what it sends, [ANSWER_OFF, +size) where answers land, XFER/LAND regions.
 */
static bool requester(struct side *s, const struct endpoint *peer, struct run_state *st)
{
	unsigned int n = opt.traffic ? UINT32_MAX : opt.iters;
	uint32_t xfer = opt.size > XFER_MAX ? XFER_MAX : opt.size;
	double t_start = 0, t_first = 0;
	uint32_t remote_bad, bad;

	for (unsigned int i = 0; i < n; i++) {
		uint32_t seed = 0x1000 + i;

		fill(s->buf, opt.size, seed);
		memset(s->buf + ANSWER_OFF, 0, opt.size);
		post_recv(s, ANSWER_OFF, opt.size, i);
		if (!i)
			t_start = now_ms();
		post_send(s, VRNIC_WQE_OP_SEND, 0, opt.size, i, 0, 0);
		if (!await(s, st, true) || !await(s, st, false))
			return false;
		/* The responder echoes the bytes it got, so a match proves both legs. */
		st->bad_bytes += mismatches(s->buf + ANSWER_OFF, opt.size, seed) + (st->last_recv_len != opt.size);
		st->verified_bytes += opt.size;
		st->round_trips++;
		if (!i)
			t_first = now_ms();
		if (opt.traffic && i == 9) {
			report(role, "ready", "\"role\":\"requester\",\"round_trips\":%u", st->round_trips);
			report(role, "watching", "\"what\":\"ping-pong in flight\"");
		}
	}
	first_rtt_ms = t_first - t_start;
	mean_rtt_ms = st->round_trips > 1 ? (now_ms() - t_first) / (st->round_trips - 1) : first_rtt_ms;
	report(role, "pingpong", "\"round_trips\":%u,\"size\":%u,\"bytes_verified\":%u,\"bad_bytes\":%u,\"first_rtt_ms\":%.3f,\"mean_rtt_ms\":%.3f",
	       st->round_trips, opt.size, st->verified_bytes, st->bad_bytes, first_rtt_ms, mean_rtt_ms);

	/* RDMA WRITE into the responder's XFER region, then a SEND that says "check it". */
	fill(s->buf + XFER_OFF, xfer, 0xa5a5);
	post_send(s, VRNIC_WQE_OP_RDMA_WRITE, XFER_OFF, xfer, 1000, peer->addr + XFER_OFF, peer->rkey);
	if (!await(s, st, false))
		return false;
	post_recv(s, ANSWER_OFF, 4, 1001);
	post_send(s, VRNIC_WQE_OP_SEND, 0, 4, 1002, 0, 0);
	if (!await(s, st, true) || !await(s, st, false))
		return false;
	/* The answer: how many bytes of the WRITE the responder found wrong. */
	memcpy(&remote_bad, s->buf + ANSWER_OFF, 4);
	st->bad_bytes += remote_bad;
	st->verified_bytes += xfer;
	report(role, "rdma-write", "\"bytes\":%u,\"bad_bytes_at_responder\":%u", xfer, remote_bad);

	/* RDMA READ of the responder's READ region (filled before it connected). */
	memset(s->buf + LAND_OFF, 0, xfer);
	post_send(s, VRNIC_WQE_OP_RDMA_READ, LAND_OFF, xfer, 1003, peer->addr + READ_OFF, peer->rkey);
	if (!await(s, st, false))
		return false;
	bad = mismatches(s->buf + LAND_OFF, xfer, 0x5a5a);
	st->bad_bytes += bad;
	st->verified_bytes += xfer;
	report(role, "rdma-read", "\"bytes\":%u,\"bad_bytes\":%u", xfer, bad);

	/* "Done": a zero-length SEND the responder answers in kind. */
	post_recv(s, ANSWER_OFF, 4, 1004);
	post_send(s, VRNIC_WQE_OP_SEND, 0, 0, 1005, 0, 0);
	return await(s, st, true) && await(s, st, false);
}

/* The responder: echoes each ping, checks the WRITE when told, answers "done" and stops. */
static bool responder(struct side *s, struct run_state *st)
{
	unsigned int n = opt.traffic ? UINT32_MAX : opt.iters;
	uint32_t xfer = opt.size > XFER_MAX ? XFER_MAX : opt.size;
	uint32_t bad;

	/* The first receive was posted before connecting; each answer's receive before the answer. */
	for (unsigned int i = 0; i < n; i++) {
		if (!await(s, st, true))
			return false;
		st->bad_bytes += mismatches(s->buf + ANSWER_OFF, opt.size, 0x1000 + i) + (st->last_recv_len != opt.size);
		st->verified_bytes += opt.size;
		memcpy(s->buf, s->buf + ANSWER_OFF, opt.size);
		post_recv(s, ANSWER_OFF, opt.size, i + 1);
		post_send(s, VRNIC_WQE_OP_SEND, 0, opt.size, i, 0, 0);
		st->round_trips++;
		if (opt.traffic && i == 9)
			report(role, "ready", "\"role\":\"responder\",\"round_trips\":%u", st->round_trips);
	}
	/* The "check it" SEND: the WRITE landed before it (one QP executes in order). */
	if (!await(s, st, true))
		return false;
	bad = mismatches(s->buf + XFER_OFF, xfer, 0xa5a5);
	st->bad_bytes += bad;
	st->verified_bytes += xfer;
	report(role, "rdma-write-landed", "\"bytes\":%u,\"bad_bytes\":%u", xfer, bad);
	memcpy(s->buf, &bad, 4);
	post_recv(s, ANSWER_OFF, 4, 2000);
	post_send(s, VRNIC_WQE_OP_SEND, 0, 4, 2001, 0, 0);
	if (!await(s, st, true))
		return false;
	post_send(s, VRNIC_WQE_OP_SEND, 0, 0, 2002, 0, 0);
	return await(s, st, false);
}

/* ---- reaching the peer ---------------------------------------------------------------------- */

/*
 * How a side reaches its peer to exchange endpoints and to agree both are in RTS: two processes
 * of one guest share pipes; sides in two guests each have a serial line to the host, which reads
 * their `endpoint` and `connected` reports and relays "PEER ..." and "GO" lines.
 */
struct link {
	int in_fd, out_fd;	/* pipes; out_fd -1 with a relay */
	bool relay;
};

/* One line from the relay; a host that never answers ends the wait after two minutes. */
static bool read_line(int fd, char *buf, size_t len)
{
	size_t n = 0;
	double start = now_ms();

	while (n + 1 < len) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		char ch;

		if (now_ms() - start > 120000)
			return false;
		if (poll(&p, 1, 1000) <= 0 || !(p.revents & POLLIN)) {
			/* A line with nobody at the other end polls as hung up at once: do not spin. */
			if (p.revents & (POLLHUP | POLLERR))
				usleep(100000);
			continue;
		}
		/* Nothing yet (a serial line with nobody at the other end reads as hung up): wait. */
		if (read(fd, &ch, 1) != 1) {
			usleep(100000);
			continue;
		}
		if (ch == '\r')
			continue;
		if (ch == '\n') {
			if (!n)
				continue;
			break;
		}
		buf[n++] = ch;
	}
	buf[n] = '\0';
	return true;
}

static bool exchange(const struct link *l, const struct endpoint *me, struct endpoint *peer)
{
	char line[200];
	unsigned long long addr;

	if (!l->relay)
		return write_all(l->out_fd, me, sizeof(*me)) && read_all(l->in_fd, peer, sizeof(*peer));
	report(role, "endpoint", "\"lid\":%u,\"qpn\":%u,\"psn\":%u,\"rkey\":%u,\"addr\":%llu", me->lid, me->qpn, me->psn,
	       me->rkey, (unsigned long long)me->addr);
	/*
	 * The host sends "PEER lid qpn psn rkey addr", all decimal. Other lines (what a serial line
	 * carries before anyone spoke on it) are skipped; read_line bounds the wait.
	 */
	do {
		if (!read_line(l->in_fd, line, sizeof(line)))
			return false;
	} while (sscanf(line, "PEER %u %u %u %u %llu", &peer->lid, &peer->qpn, &peer->psn, &peer->rkey, &addr) != 5);
	peer->addr = addr;
	return true;
}

/* Returns once both sides are in RTS (pipes), or, relayed, once the host says the responder is. */
static bool both_ready(const struct link *l, bool is_requester)
{
	char sync = 'r', line[16];

	if (!l->relay)
		return write_all(l->out_fd, &sync, 1) && read_all(l->in_fd, &sync, 1);
	if (!is_requester)
		return true;	/* its `connected` report is what the host waits for */
	do {
		if (!read_line(l->in_fd, line, sizeof(line)))
			return false;
	} while (strcmp(line, "GO"));
	return true;
}

/* A serial line as a plain byte pipe: no echo back to the host, no line editing. */
static int open_tty(const char *path)
{
	struct termios t;
	int fd = open(path, O_RDWR | O_NOCTTY | O_CLOEXEC);

	if (fd < 0)
		return -1;
	if (!tcgetattr(fd, &t)) {
		cfmakeraw(&t);
		/* No modem lines on this wire: without CLOCAL a read sees a hang-up. */
		t.c_cflag |= CLOCAL | CREAD;
		tcsetattr(fd, TCSANOW, &t);
	}
	return fd;
}

/* ---- main ---------------------------------------------------------------------------------- */

static int run_side(const char *path, bool is_requester, const struct link *link)
{
	struct side s;
	struct endpoint me = { 0 }, peer = { 0 };
	struct run_state st = { .end = GOT_CQE };
	const char *step;
	bool ok;
	int err;

	err = side_setup(path, &s, &step);
	if (!err && !is_requester) {
		fill(s.buf + READ_OFF, XFER_MAX, 0x5a5a);
		post_recv(&s, ANSWER_OFF, opt.size, 0);
	}
	if (!err) {
		step = "modify-qp-init";
		err = modify_qp(&s, UV_QPS_INIT, UV_QP_PKEY_INDEX | UV_QP_PORT | UV_QP_ACCESS_FLAGS, NULL, 0);
	}
	if (err) {
		report(role, "error", "\"op\":\"%s\",\"errno\":%d,\"error\":\"%s\"", step, -err, strerror(-err));
		side_teardown(&s);
		return 1;
	}
	me.lid = s.lid;
	me.qpn = s.qpn;
	me.psn = (is_requester ? 0x1111 : 0x2222) + (getpid() & 0xfff);
	me.rkey = s.rkey;
	me.addr = (uintptr_t)s.buf;
	/* The exchange: a peer that died closes its end, so a read here never waits forever. */
	if (!exchange(link, &me, &peer)) {
		report(role, "error", "\"op\":\"exchange\",\"errno\":0,\"error\":\"the peer went away\"");
		side_teardown(&s);
		return 1;
	}
	step = "modify-qp-rtr";
	err = modify_qp(&s, UV_QPS_RTR, UV_QP_AV | UV_QP_PATH_MTU | UV_QP_DEST_QPN | UV_QP_RQ_PSN |
			UV_QP_MAX_DEST_RD_ATOMIC | UV_QP_MIN_RNR_TIMER, &peer, 0);
	if (!err) {
		step = "modify-qp-rts";
		err = modify_qp(&s, UV_QPS_RTS, UV_QP_SQ_PSN | UV_QP_TIMEOUT | UV_QP_RETRY_CNT | UV_QP_RNR_RETRY |
				UV_QP_MAX_QP_RD_ATOMIC, NULL, me.psn);
	}
	report(role, "connected", "\"errno\":%d,\"step\":\"%s\",\"lid\":%u,\"qpn\":%u,\"psn\":%u,\"rkey\":\"0x%x\",\"peer_lid\":%u,\"peer_qpn\":%u,\"peer_psn\":%u,\"peer_rkey\":\"0x%x\"",
	       -err, err ? step : "done", me.lid, me.qpn, me.psn, me.rkey, peer.lid, peer.qpn, peer.psn, peer.rkey);
	/* Neither side sends before both are in RTS: a packet to a QP not yet in RTR is dropped. */
	if (err || !both_ready(link, is_requester)) {
		side_teardown(&s);
		return 1;
	}
	ok = is_requester ? requester(&s, &peer, &st) : responder(&s, &st);
	if (opt.traffic) {
		/*
		 * The device went away under the ping-pong: the exchange must have ended by an error
		 * completion or by EIO from the core, not by a device that silently stopped answering.
		 */
		const char *reason = st.error_cqes ? "error-cqe" : st.end == GONE_EIO ? "eio" : ok ? "done" : end_names[st.end];

		report(role, "traffic-end", "\"reason\":\"%s\",\"errno\":%d,\"first_error_status\":%u,\"error_cqes\":%u,\"round_trips\":%u,\"bytes_verified\":%u,\"bad_bytes\":%u",
		       reason, -st.end_errno, st.first_error_status, st.error_cqes, st.round_trips, st.verified_bytes, st.bad_bytes);
		side_teardown(&s);
		return (st.error_cqes || st.end == GONE_EIO) && !st.bad_bytes ? 0 : 1;
	}
	report(role, "verified", "\"ok\":%s,\"end\":\"%s\",\"errno\":%d,\"error_cqes\":%u,\"first_error_status\":%u,\"round_trips\":%u,\"bytes_verified\":%u,\"bad_bytes\":%u",
	       ok && !st.bad_bytes ? "true" : "false", end_names[st.end], -st.end_errno, st.error_cqes, st.first_error_status,
	       st.round_trips, st.verified_bytes, st.bad_bytes);
	side_teardown(&s);
	return ok && !st.bad_bytes ? 0 : 1;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: vrnic-pingpong [--iters N] [--size BYTES] [--traffic] [--wait-device S] [--output PATH]\n"
		"                      [--role requester|responder --peer-tty TTY]\n"
		"  Two processes connect RC QPs on the first vrnic device and run a SEND ping-pong of\n"
		"  --iters round trips (default 200) of --size bytes (default 64, at most 4096), then an\n"
		"  RDMA WRITE and an RDMA READ, every byte verified. --traffic: ping-pong until the\n"
		"  device goes away; exit 0 only if that ended in error completions or EIO.\n"
		"  --role: run one side only (the peer is in another guest); the host reads this side's\n"
		"  endpoint report and writes the peer's as \"PEER lid qpn psn rkey addr\" on TTY, then\n"
		"  \"GO\" to the requester once the responder reported connected.\n");
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "iters", required_argument, NULL, 'n' },
		{ "size", required_argument, NULL, 's' },
		{ "traffic", no_argument, NULL, 't' },
		{ "wait-device", required_argument, NULL, 'w' },
		{ "output", required_argument, NULL, 'o' },
		{ "role", required_argument, NULL, 'r' },
		{ "peer-tty", required_argument, NULL, 'p' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct device dev;
	int a2b[2], b2a[2], c, code, status;
	double waited;
	pid_t child;

	report_clock_start();
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'n':
			opt.iters = strtoul(optarg, NULL, 0);
			break;
		case 's':
			opt.size = strtoul(optarg, NULL, 0);
			break;
		case 't':
			opt.traffic = true;
			break;
		case 'w':
			opt.wait_device_s = strtod(optarg, NULL);
			break;
		case 'o':
			opt.output = optarg;
			break;
		case 'r':
			opt.role = optarg;
			break;
		case 'p':
			opt.peer_tty = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc || opt.iters < 1 || opt.iters > 1000000 || opt.size < 4 || opt.size > MSG_MAX ||
	    opt.wait_device_s < 0 || opt.wait_device_s > 600 || !opt.role != !opt.peer_tty ||
	    (opt.role && strcmp(opt.role, "requester") && strcmp(opt.role, "responder"))) {
		usage(stderr);
		return 2;
	}
	if (opt.output) {
		report_fd = open(opt.output, O_WRONLY | O_NOCTTY | O_CLOEXEC);
		if (report_fd < 0)
			report_fd = 1;
	}
	for (waited = 0; !find_device(&dev, NULL); waited += 0.1) {
		if (waited >= opt.wait_device_s) {
			report(role, "no-device", "\"waited_s\":%.1f", waited);
			report(role, "exit", "\"code\":3");
			return 3;
		}
		usleep(100000);
	}
	report(role, "start", "\"device\":\"%s\",\"iters\":%u,\"size\":%u,\"traffic\":%s,\"role\":\"%s\"", dev.path, opt.iters,
	       opt.size, opt.traffic ? "true" : "false", opt.role ? opt.role : "both");
	if (opt.role) {
		struct link relay = { .in_fd = open_tty(opt.peer_tty), .out_fd = -1, .relay = true };
		bool is_requester = !strcmp(opt.role, "requester");

		if (relay.in_fd < 0) {
			report(role, "error", "\"op\":\"open-peer-tty\",\"errno\":%d", errno);
			report(role, "exit", "\"code\":1");
			return 1;
		}
		role = opt.role;
		code = run_side(dev.path, is_requester, &relay);
		role = "main";
		report(role, "exit", "\"code\":%d", code);
		return code;
	}
	if (pipe2(a2b, O_CLOEXEC) || pipe2(b2a, O_CLOEXEC)) {
		report(role, "error", "\"op\":\"pipe\",\"errno\":%d", errno);
		return 1;
	}
	child = fork();
	if (child < 0) {
		report(role, "error", "\"op\":\"fork\",\"errno\":%d", errno);
		return 1;
	}
	if (!child) {
		role = "responder";
		close(a2b[1]);
		close(b2a[0]);
		struct link pipes = { .in_fd = a2b[0], .out_fd = b2a[1] };

		code = run_side(dev.path, false, &pipes);
		/* Not "exit": that one is the whole program's, reported by the parent. */
		report(role, "side-exit", "\"code\":%d", code);
		_exit(code);
	}
	role = "requester";
	close(a2b[0]);
	close(b2a[1]);
	{
		struct link pipes = { .in_fd = b2a[0], .out_fd = a2b[1] };

		code = run_side(dev.path, true, &pipes);
	}
	close(a2b[1]);
	close(b2a[0]);
	role = "main";
	if (waitpid(child, &status, 0) < 0)
		status = -1;
	report(role, "child-exit", "\"child\":%d,\"exited\":%s,\"code\":%d,\"signal\":%d", (int)child,
	       WIFEXITED(status) ? "true" : "false", WIFEXITED(status) ? WEXITSTATUS(status) : -1,
	       WIFSIGNALED(status) ? WTERMSIG(status) : 0);
	if (!code && !(WIFEXITED(status) && WEXITSTATUS(status) == 0))
		code = 5;
	report(role, "exit", "\"code\":%d", code);
	return code;
}
