// SPDX-License-Identifier: GPL-2.0
/* test-scenarios.c: vrnic-test's one-process scenarios (single, fork, split) and the choice of scenario. */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "report.h"
#include "uverbs.h"
#include "vrnic-test.h"

/*
 * Runs the scenario --scenario names. single, fork and split are here: one context, its UAR run
 * mapped by this process (and inherited by the child in fork).
 */
int run(const struct device *d)
{
	struct context c;
	struct ib_uverbs_query_device_resp qd;
	struct verbs verbs;
	struct datapath dp = { .comp_channel = -1 };
	volatile uint32_t *base;
	unsigned int npages = opt.uars;
	bool split = !strcmp(opt.scenario, "split");
	bool fork_mode = !strcmp(opt.scenario, "fork");
	int ret;

	if (!strcmp(opt.scenario, "fd-passing"))
		return run_fd_passing(d);
	if (!strcmp(opt.scenario, "many"))
		return run_many(d);
	if (!strcmp(opt.scenario, "race-close"))
		return run_race_close(d);
	if (split && npages < 4)
		npages = 4;
	ret = get_context(d, npages, &c);
	if (ret) {
		report(NULL, "error", "\"op\":\"get-context\",\"errno\":%d,\"error\":\"%s\"", -ret, strerror(-ret));
		return EXIT_FAIL;
	}
	report(NULL, "context",
	       "\"device\":\"%s\",\"ibdev\":\"%s\",\"abi_version\":%u,\"num_uars\":%u,\"uar_index\":%u,\"uar_page_size\":%u,\"mmap_offset\":\"0x%llx\",\"driver_flags\":%u,\"bar2\":[\"0x%" PRIx64 "\",\"0x%" PRIx64 "\"]",
	       d->path, d->ibdev, c.resp.abi_version, c.resp.num_uars, c.resp.uar_index, c.resp.uar_page_size,
	       (unsigned long long)c.resp.uar_mmap_offset, c.resp.driver_flags, d->bar2_start, d->bar2_end);
	ret = uv_query_device(c.fd, &qd);
	if (ret)
		report(NULL, "error", "\"op\":\"query-device\",\"errno\":%d", -ret);
	else
		report(NULL, "query-device", "\"vendor_id\":\"0x%x\",\"vendor_part_id\":\"0x%x\",\"max_qp\":%u,\"max_cq\":%u,\"max_pd\":%u,\"phys_port_cnt\":%u",
		       qd.vendor_id, qd.vendor_part_id, qd.max_qp, qd.max_cq, qd.max_pd, qd.phys_port_cnt);
	verbs_setup(c.fd, &verbs);
	if (c.resp.num_uars != npages || c.resp.uar_page_size != VRNIC_UAR_PAGE_SIZE) {
		report(NULL, "error", "\"op\":\"get-context\",\"error\":\"driver gave %u pages of %u bytes\"",
		       c.resp.num_uars, c.resp.uar_page_size);
		return EXIT_FAIL;
	}

	base = map_uars(d, &c, npages);
	if (!base)
		return EXIT_FAIL;
	if (split) {
		/* Pages 0..3: unmap page 1 and make page 3 read-only, so the one VMA becomes three. */
		volatile uint32_t *p3 = base + 3 * VRNIC_UAR_PAGE_SIZE / 4;

		add_mapping("page0", base, true, &c);
		add_mapping("page2", base + 2 * VRNIC_UAR_PAGE_SIZE / 4, true, &c);
		add_mapping("page3-ro", p3, true, &c);
		write_doorbells(&maps[0]);
		write_doorbells(&maps[1]);
		write_doorbells(&maps[2]);	/* while still writable, so it holds data to lose */
		if (munmap((void *)(base + VRNIC_UAR_PAGE_SIZE / 4), VRNIC_UAR_PAGE_SIZE) ||
		    mprotect((void *)p3, VRNIC_UAR_PAGE_SIZE, PROT_READ)) {
			report(NULL, "error", "\"op\":\"split\",\"errno\":%d,\"error\":\"%s\"", errno, strerror(errno));
			return EXIT_FAIL;
		}
		maps[2].writable = false;
		report(NULL, "split", "\"unmapped\":\"page1\",\"read_only\":\"page3\",\"pieces\":3");
	} else {
		add_mapping(fork_mode ? "parent" : "uar0", base, true, &c);
		write_doorbells(&maps[0]);
		datapath_run(c.fd, &verbs, base, &dp);
		/* The QP's doorbell may share the word the pattern wrote: expect what is there now. */
		maps[0].doorbell = base[OFF_SQ_DB / 4];
		if (!fork_mode) {
			/*
			 * A second mapping of the same pages through the same file: after the removal
			 * both must be on the file's one dummy page, and a write through one must read
			 * back through the other.
			 */
			volatile uint32_t *twin = map_uars(d, &c, npages);

			/* After a removal during setup mmap fails (EIO): watch the mapping there is. */
			if (twin) {
				add_mapping("uar0-twin", twin, true, &c);
				maps[1].doorbell = maps[0].doorbell;
			}
		}
	}
	report_frames(d, "frame");

	if (fork_mode) {
		pid_t child;
		int status;

		child = fork();
		if (child < 0) {
			report(NULL, "error", "\"op\":\"fork\",\"errno\":%d", errno);
			return EXIT_FAIL;
		}
		if (child == 0) {
			/* The child inherits the VMA (VM_DONTCOPY is not set): its own PTEs, same frame. */
			snprintf(maps[0].label, sizeof(maps[0].label), "child");
			claim_scratch(&maps[0], 1);
			report_frames(d, "frame");
			report(NULL, "ready", "\"role\":\"child\"");
			watch(d, &c, true);
			_exit(EXIT_OK);
		}
		report(NULL, "ready", "\"role\":\"parent\",\"child\":%d", (int)child);
		watch(d, &c, opt.commands == NULL);
		while (waitpid(child, &status, 0) < 0 && errno == EINTR)
			;
		if (report_child_status(child, status))
			return EXIT_CHILD;
	} else {
		report(NULL, "ready", "\"mappings\":%u", nmaps);
		if (opt.watch_s > 0 || opt.commands)
			watch(d, &c, opt.commands == NULL);
	}

	{
		double t;

		if (c.fd >= 0) {
			datapath_teardown(c.fd, &dp);
			verbs_teardown(c.fd, &verbs);
		}
		t = now_ms();
		if (c.fd >= 0) {
			close(c.async_fd);
			close(c.fd);
		}
		report(NULL, "closed", "\"close_ms\":%.3f", now_ms() - t);
	}
	return EXIT_OK;
}

/* ---- main ---------------------------------------------------------------------------------- */
