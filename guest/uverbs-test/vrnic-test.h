/* SPDX-License-Identifier: GPL-2.0 */
/* vrnic-test.h: what the units of vrnic-test (the unplug test program) share: options, context, mappings, scenarios. */
#ifndef VRNIC_TEST_H
#define VRNIC_TEST_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "device.h"
#include "pfn.h"
#include "vrnic-abi.h"

#define VERSION "1"

/* The test's own words in the UAR page's software half, which the device ignores. */
#define OFF_SQ_DB 0x000u			/* the first QP doorbell slot */
#define OFF_CQ_DB VRNIC_UAR_SLOT_BYTES		/* the first CQ doorbell slot */
#define OFF_SCRATCH VRNIC_UAR_SCRATCH		/* scratch words, one per mapping */
#define OFF_ECHO (VRNIC_UAR_SCRATCH + 0x400u)	/* the dummy-page test's words, one per mapping */

enum {
	EXIT_OK = 0,
	EXIT_FAIL = 1,
	EXIT_USAGE = 2,
	EXIT_NO_DEVICE = 3,
	EXIT_SIGNAL = 4,
	EXIT_CHILD = 5,
};

struct options {
	const char *device;
	double wait_device_s;
	unsigned int uars;
	const char *scenario;
	unsigned int doorbells;
	unsigned int doorbell_gap_ms;
	double watch_s;
	unsigned int interval_ms;
	unsigned int settle_ms;
	const char *commands;
	const char *output;
	unsigned int procs;	/* per scenario: many 32, race-close 8 */
	unsigned int nops;
	bool comp_event;
};

extern struct options opt;

/* ---- test-context.c: a uverbs context and passing it to another process ---- */

struct context {
	pid_t owner;	/* the process that opened the fd: the only one that may write() to it */
	int fd;
	int async_fd;
	struct vrnic_alloc_ucontext_resp resp;
};

int get_context(const struct device *d, unsigned int num_uars, struct context *c);
void close_context(struct context *c);
int send_context(int sock, const struct context *c);
int recv_context(int sock, struct context *c);

/* ---- test-canary.c ---- */

int canary(void);

/* ---- test-datapath.c: PD, MR, CQ and QP held across the unplug ---- */

struct verbs {
	bool have_pd, have_mr;
	uint32_t pd_handle, pdn, mr_handle, lkey, rkey;
	void *buf;
	size_t len;
};

struct datapath {
	bool have_cq, have_qp;
	int comp_channel;	/* --comp-event: the completion channel the CQ reports to, else -1 */
	uint32_t cq_handle, qp_handle, cqn, qpn, cq_db, qp_db, cq_entries;
	volatile uint8_t *cq_ring;
	volatile uint8_t *sq_ring;
};

void verbs_setup(int fd, struct verbs *v);
void verbs_teardown(int fd, struct verbs *v);
void datapath_run(int fd, const struct verbs *v, volatile uint32_t *uar, struct datapath *dp);
void datapath_teardown(int fd, struct datapath *dp);

/* ---- test-watch.c: the mappings and the watch loop ---- */

struct mapping {
	char label[32];
	volatile uint32_t *page;	/* the page this entry watches */
	bool writable;
	/*
	 * Each mapping (and each process of a fork) owns its own scratch word: after the zap all
	 * mappings of one uverbs file share the core's one dummy page, and a shared word would
	 * show one mapping's writes as foreign data in another.
	 */
	unsigned int scratch_off;
	/* The uverbs file it maps ("uarN", N the context's first UAR page): shared by fork and SCM_RIGHTS. */
	char file[16];
	uint32_t doorbell;		/* what we last wrote at OFF_SQ_DB (what the device page holds) */
	uint32_t scratch;		/* what we last wrote at scratch_off */
	char view[16];			/* device, zero, own-writes, other */
	struct frame frame;
	uint64_t reads, writes, changes;
	/* Probes after the removal whose frame was still inside BAR2: reads of where the device was. */
	uint64_t bar_reads_after_gone;
	uint32_t last_db, last_scratch;
	uint32_t last_expect;		/* the scratch value the last read expected (our write before it) */
	/* The dummy-page test (end of the watch): a word written through one mapping, read through a peer. */
	const char *echo;		/* none, seen, lost */
	char echo_peer[32];
	uint32_t echo_wrote, echo_read;
};

#define MAX_MAPPINGS 16
extern struct mapping maps[MAX_MAPPINGS];
extern unsigned int nmaps;
/* --commands: where command lines come from, or -1. */
extern int cmd_fd;

volatile uint32_t *map_uars(const struct device *d, struct context *c, unsigned int npages);
int add_mapping(const char *label, volatile uint32_t *page, bool writable, const struct context *c);
void claim_scratch(struct mapping *m, unsigned int slot);
void write_doorbells(struct mapping *m);
void report_frames(const struct device *d, const char *event);
void watch(const struct device *d, struct context *c, bool auto_start);

/* ---- the scenarios: test-scenarios.c (one process), test-procs.c (several) ---- */

int run(const struct device *d);
int run_fd_passing(const struct device *d);
int run_many(const struct device *d);
int run_race_close(const struct device *d);
int report_child_status(pid_t child, int status);

#endif /* VRNIC_TEST_H */
