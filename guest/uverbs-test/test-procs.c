// SPDX-License-Identifier: GPL-2.0
/* test-procs.c: vrnic-test's scenarios with several processes: fd-passing, many and race-close. */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "report.h"
#include "vrnic-test.h"

/* Reports how a child process ended; 0 when it exited by itself with status 0. */
int report_child_status(pid_t child, int status)
{
	report(NULL, "child-exit", "\"child\":%d,\"exited\":%s,\"code\":%d,\"signal\":%d",
	       (int)child, WIFEXITED(status) ? "true" : "false",
	       WIFEXITED(status) ? WEXITSTATUS(status) : -1, WIFSIGNALED(status) ? WTERMSIG(status) : 0);
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

/*
 * fd-passing: a process that never opened the device makes the mapping. The child is forked
 * before the parent opens anything, so it holds no inherited fd; it gets the uverbs fd over a
 * Unix socket, maps the UAR and watches it. The parent keeps the context open and watches for
 * the device leaving.
 */
int run_fd_passing(const struct device *d)
{
	int sv[2], status, ret = EXIT_OK;
	struct context c;
	pid_t child;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)) {
		report(NULL, "error", "\"op\":\"socketpair\",\"errno\":%d", errno);
		return EXIT_FAIL;
	}
	fflush(NULL);
	child = fork();
	if (child < 0) {
		report(NULL, "error", "\"op\":\"fork\",\"errno\":%d", errno);
		return EXIT_FAIL;
	}
	if (child == 0) {
		volatile uint32_t *base;

		close(sv[0]);
		ret = recv_context(sv[1], &c);
		if (ret) {
			report("receiver", "error", "\"op\":\"recv-fd\",\"errno\":%d", -ret);
			_exit(EXIT_FAIL);
		}
		report("receiver", "fd-received", "\"fd\":%d,\"num_uars\":%u,\"mmap_offset\":\"0x%llx\"",
		       c.fd, c.resp.num_uars, (unsigned long long)c.resp.uar_mmap_offset);
		base = map_uars(d, &c, c.resp.num_uars);
		if (!base)
			_exit(EXIT_FAIL);
		add_mapping("receiver", base, true, &c);
		write_doorbells(&maps[0]);
		report_frames(d, "frame");
		report(NULL, "ready", "\"role\":\"receiver\"");
		watch(d, &c, true);
		close_context(&c);
		report(NULL, "closed", "\"role\":\"receiver\"");
		_exit(EXIT_OK);
	}
	close(sv[1]);
	ret = get_context(d, opt.uars, &c);
	if (ret) {
		report(NULL, "error", "\"op\":\"get-context\",\"errno\":%d,\"error\":\"%s\"", -ret, strerror(-ret));
		kill(child, SIGKILL);
		waitpid(child, &status, 0);
		return EXIT_FAIL;
	}
	report(NULL, "context", "\"device\":\"%s\",\"ibdev\":\"%s\",\"num_uars\":%u,\"uar_index\":%u,\"uar_page_size\":%u,\"mmap_offset\":\"0x%llx\",\"driver_flags\":%u,\"bar2\":[\"0x%" PRIx64 "\",\"0x%" PRIx64 "\"]",
	       d->path, d->ibdev, c.resp.num_uars, c.resp.uar_index, c.resp.uar_page_size,
	       (unsigned long long)c.resp.uar_mmap_offset, c.resp.driver_flags, d->bar2_start, d->bar2_end);
	ret = send_context(sv[0], &c);
	close(sv[0]);
	if (ret)
		report(NULL, "error", "\"op\":\"send-fd\",\"errno\":%d", -ret);
	else
		report(NULL, "fd-sent", "\"to\":%d", (int)child);
	report(NULL, "ready", "\"role\":\"opener\",\"child\":%d", (int)child);
	watch(d, &c, true);
	while (waitpid(child, &status, 0) < 0 && errno == EINTR)
		;
	close_context(&c);
	report(NULL, "closed", "\"role\":\"opener\"");
	return report_child_status(child, status) || ret ? EXIT_CHILD : EXIT_OK;
}

/* One process with its own context and one mapping, watched: what each of `many` runs. */
static int single_process(const struct device *d, const char *label)
{
	struct context c;
	volatile uint32_t *base;
	int ret;

	ret = get_context(d, opt.uars, &c);
	if (ret) {
		report(label, "error", "\"op\":\"get-context\",\"errno\":%d,\"error\":\"%s\"", -ret, strerror(-ret));
		return EXIT_FAIL;
	}
	report(label, "context", "\"num_uars\":%u,\"uar_index\":%u,\"mmap_offset\":\"0x%llx\"",
	       c.resp.num_uars, c.resp.uar_index, (unsigned long long)c.resp.uar_mmap_offset);
	base = map_uars(d, &c, c.resp.num_uars);
	if (!base)
		return EXIT_FAIL;
	add_mapping(label, base, true, &c);
	write_doorbells(&maps[0]);
	report_frames(d, "frame");
	report(label, "ready", "\"role\":\"worker\"");
	watch(d, &c, true);
	close_context(&c);
	report(label, "closed", NULL);
	return EXIT_OK;
}

/*
 * many: --procs processes (default 32), each with its own context and mapping, plus this
 * process with one context mapped three times (three VMAs on one mmap entry).
 */
int run_many(const struct device *d)
{
	unsigned int n = opt.procs ? opt.procs : 32, i, ok = 0, failed = 0;
	pid_t *kids = calloc(n, sizeof(pid_t));
	struct context c;
	int status, ret;

	if (!kids)
		return EXIT_FAIL;
	fflush(NULL);
	for (i = 0; i < n; i++) {
		kids[i] = fork();
		if (kids[i] == 0) {
			char label[32];

			snprintf(label, sizeof(label), "proc%u", i);
			_exit(single_process(d, label));
		}
		if (kids[i] < 0)
			report(NULL, "error", "\"op\":\"fork\",\"errno\":%d,\"index\":%u", errno, i);
	}
	report(NULL, "spawned", "\"procs\":%u", n);

	ret = get_context(d, opt.uars, &c);
	if (ret) {
		report(NULL, "error", "\"op\":\"get-context\",\"errno\":%d,\"error\":\"%s\"", -ret, strerror(-ret));
	} else {
		report(NULL, "context", "\"num_uars\":%u,\"uar_index\":%u,\"mmap_offset\":\"0x%llx\",\"bar2\":[\"0x%" PRIx64 "\",\"0x%" PRIx64 "\"]",
		       c.resp.num_uars, c.resp.uar_index, (unsigned long long)c.resp.uar_mmap_offset,
		       d->bar2_start, d->bar2_end);
		for (i = 0; i < 3; i++) {
			char label[32];
			volatile uint32_t *base = map_uars(d, &c, c.resp.num_uars);

			if (!base)
				break;
			snprintf(label, sizeof(label), "multi%u", i);
			add_mapping(label, base, true, &c);
		}
		if (nmaps) {
			/* One page behind every VMA: the doorbell pattern once, each its own scratch word. */
			write_doorbells(&maps[0]);
			for (i = 1; i < nmaps; i++) {
				maps[i].doorbell = maps[0].doorbell;
				claim_scratch(&maps[i], i);
			}
			report_frames(d, "frame");
			report(NULL, "ready", "\"role\":\"multi-map\",\"mappings\":%u", nmaps);
			watch(d, &c, true);
		}
		close_context(&c);
	}
	for (i = 0; i < n; i++) {
		if (kids[i] <= 0)
			continue;
		while (waitpid(kids[i], &status, 0) < 0 && errno == EINTR)
			;
		if (report_child_status(kids[i], status))
			failed++;
		else
			ok++;
	}
	free(kids);
	report(NULL, "children", "\"procs\":%u,\"ok\":%u,\"failed\":%u", n, ok, failed);
	return failed || ret ? EXIT_CHILD : EXIT_OK;
}

/*
 * One race-close worker: open, get a context, map, touch, and tear down in a varying order
 * (sometimes closing the fd while the mapping still exists), until it decides to exit, the
 * device has been gone for settle_ms, or the watch time is up.
 */
static int race_worker(const struct device *d, unsigned int index, double deadline)
{
	unsigned int seed = (unsigned int)getpid() * 2654435761u, iters = 0, maps_made = 0;
	unsigned int budget = 1 + rand_r(&seed) % 20;
	unsigned int err_ctx = 0, err_map = 0, last_errno = 0;
	double gone_at = 0;
	char label[32];

	snprintf(label, sizeof(label), "race%u", index);
	fault_label = label;
	while (iters < budget && now_ms() < deadline) {
		struct context c;
		void *p;
		int ret;

		if (!gone_at && !device_present(d))
			gone_at = now_ms();
		if (gone_at && now_ms() - gone_at >= opt.settle_ms)
			break;
		iters++;
		ret = get_context(d, opt.uars, &c);
		if (ret) {
			err_ctx++;
			last_errno = -ret;
			usleep(opt.interval_ms * 1000);
			continue;
		}
		p = mmap(NULL, (size_t)c.resp.num_uars * VRNIC_UAR_PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, c.fd,
			 (off_t)c.resp.uar_mmap_offset);
		if (p == MAP_FAILED) {
			err_map++;
			last_errno = errno;
			close_context(&c);
			continue;
		}
		maps_made++;
		((volatile uint32_t *)p)[(OFF_SCRATCH + 8 * (index % 64)) / 4] = 0x7ace0000u | iters;
		(void)((volatile uint32_t *)p)[OFF_SQ_DB / 4];
		switch (rand_r(&seed) % 3) {
		case 0:		/* the usual order */
			munmap(p, (size_t)c.resp.num_uars * VRNIC_UAR_PAGE_SIZE);
			close_context(&c);
			break;
		case 1:		/* close first: the mapping outlives the fd for a moment */
			close_context(&c);
			((volatile uint32_t *)p)[(OFF_SCRATCH + 8 * (index % 64)) / 4] = 0x7acf0000u | iters;
			munmap(p, (size_t)c.resp.num_uars * VRNIC_UAR_PAGE_SIZE);
			break;
		default:	/* leave both to exit() on the last round */
			if (iters == budget) {
				report(label, "worker-exit", "\"iterations\":%u,\"maps\":%u,\"context_errors\":%u,\"mmap_errors\":%u,\"last_errno\":%u,\"teardown\":\"exit\"",
				       iters, maps_made, err_ctx, err_map, last_errno);
				_exit(EXIT_OK);
			}
			munmap(p, (size_t)c.resp.num_uars * VRNIC_UAR_PAGE_SIZE);
			close_context(&c);
			break;
		}
		usleep((rand_r(&seed) % (opt.interval_ms + 1)) * 1000);
	}
	report(label, "worker-exit", "\"iterations\":%u,\"maps\":%u,\"context_errors\":%u,\"mmap_errors\":%u,\"last_errno\":%u,\"teardown\":\"close\"",
	       iters, maps_made, err_ctx, err_map, last_errno);
	return EXIT_OK;
}

/*
 * race-close: --procs workers (default 8) keep mapping and unmapping, and exit and are replaced,
 * while the device vanishes. Nothing may hang, leak, warn or kill a worker. A holder process
 * (`holder`) keeps one context and mapping through it all and watches it, so the removal's
 * effect on a mapping that exists while the others churn is judged too.
 */
int run_race_close(const struct device *d)
{
	unsigned int n = opt.procs ? opt.procs : 8, running = 0, spawned = 0, ok = 0, failed = 0, i;
	double deadline = now_ms() + (opt.watch_s > 0 ? opt.watch_s : 10) * 1e3, gone_at = 0;
	int status, holder_status = 0;
	bool holder_done = false;
	pid_t pid, holder;

	fflush(NULL);
	holder = fork();
	if (holder == 0)
		_exit(single_process(d, "holder"));
	if (holder < 0) {
		report(NULL, "error", "\"op\":\"fork\",\"errno\":%d,\"role\":\"holder\"", errno);
		holder_done = true;
	}
	report(NULL, "ready", "\"role\":\"race-close\",\"workers\":%u", n);
	fflush(NULL);
	for (;;) {
		bool gone;

		if (!gone_at && !device_present(d)) {
			gone_at = now_ms();
			report(NULL, "device-gone", "\"ibdev\":\"%s\",\"running\":%u,\"spawned\":%u", d->ibdev, running, spawned);
		}
		gone = gone_at != 0;
		/* Keep n workers alive until the device is gone or the time is up. */
		while (!gone && running < n && now_ms() < deadline) {
			pid = fork();
			if (pid == 0)
				_exit(race_worker(d, spawned % 1024, deadline));
			if (pid < 0) {
				report(NULL, "error", "\"op\":\"fork\",\"errno\":%d", errno);
				break;
			}
			running++;
			spawned++;
		}
		pid = waitpid(-1, &status, running ? 0 : WNOHANG);
		if (pid > 0 && pid == holder) {
			holder_done = true;
			holder_status = status;
			continue;
		}
		if (pid > 0) {
			running--;
			if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
				ok++;
			} else {
				failed++;
				report_child_status(pid, status);
			}
		} else if (!running) {
			break;
		}
		if (!running && (gone || now_ms() >= deadline))
			break;
	}
	if (!holder_done) {
		while (waitpid(holder, &holder_status, 0) < 0 && errno == EINTR)
			;
		holder_done = true;
	}
	if (holder > 0 && report_child_status(holder, holder_status))
		failed++;
	for (i = 0; i < running; i++)
		if (waitpid(-1, &status, 0) > 0 && !(WIFEXITED(status) && WEXITSTATUS(status) == 0))
			failed++;
	report(NULL, "race-summary", "\"workers\":%u,\"spawned\":%u,\"ok\":%u,\"failed\":%u,\"device_gone\":%s",
	       n, spawned, ok, failed, gone_at ? "true" : "false");
	return failed ? EXIT_CHILD : EXIT_OK;
}
