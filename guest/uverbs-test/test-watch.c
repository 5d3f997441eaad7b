// SPDX-License-Identifier: GPL-2.0
/* test-watch.c: vrnic-test's UAR mappings: mapping them, writing doorbells, and watching what they show across the unplug. */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "report.h"
#include "uverbs.h"
#include "vrnic-test.h"

struct mapping maps[MAX_MAPPINGS];
unsigned int nmaps;

/* Names what a probe saw, so a change of view is one event. */
static const char *classify(const struct mapping *m, uint32_t db, uint32_t scratch)
{
	if (db == m->doorbell && (!m->writable || scratch == m->scratch))
		return "device";
	if (db == 0 && scratch == 0)
		return "zero";
	if (db == 0 && m->writable && scratch == m->scratch)
		return "own-writes";
	return "other";
}

static void probe(const struct device *d, struct mapping *m, bool gone, bool first)
{
	struct frame f;
	const char *view;
	uint32_t db, scratch;

	fault_label = m->label;
	db = m->page[OFF_SQ_DB / 4];
	scratch = m->page[m->scratch_off / 4];
	m->reads += 2;
	view = classify(m, db, scratch);
	m->last_db = db;
	m->last_scratch = scratch;
	frame_of(d, m->page, &f);
	m->last_expect = m->scratch;
	if (gone && !strcmp(f.state, "bar"))
		m->bar_reads_after_gone++;
	if (first || strcmp(view, m->view) || strcmp(f.state, m->frame.state) || f.pfn != m->frame.pfn) {
		if (!first)
			m->changes++;
		report(m->label, first ? "watch-start" : "change",
		       "\"view\":\"%s\",\"view_before\":\"%s\",\"frame\":\"%s\",\"pfn\":\"0x%" PRIx64
		       "\",\"frame_before\":\"%s\",\"pfn_before\":\"0x%" PRIx64
		       "\",\"read_doorbell\":\"0x%08x\",\"read_scratch\":\"0x%08x\",\"expect_doorbell\":\"0x%08x\",\"expect_scratch\":\"0x%08x\",\"device_gone\":%s",
		       view, first ? "" : m->view, f.state, f.pfn, first ? "" : m->frame.state, first ? 0 : m->frame.pfn,
		       db, scratch, m->doorbell, m->scratch, gone ? "true" : "false");
		snprintf(m->view, sizeof(m->view), "%s", view);
		m->frame = f;
	}
	if (m->writable) {
		m->scratch = 0x5c000000u | (uint32_t)(m->writes & 0xffffff);
		m->page[m->scratch_off / 4] = m->scratch;
		m->writes++;
	}
	fault_label = "main";
}

static void report_summary(const struct mapping *m, bool gone)
{
	char expect[16] = "null";

	if (m->writable && m->writes)
		snprintf(expect, sizeof(expect), "\"0x%08x\"", m->last_expect);
	report(m->label, "summary",
	       "\"view\":\"%s\",\"frame\":\"%s\",\"pfn\":\"0x%" PRIx64 "\",\"file\":\"%s\",\"writable\":%s,\"reads\":%" PRIu64
	       ",\"writes\":%" PRIu64 ",\"changes\":%" PRIu64 ",\"bar_reads_after_gone\":%" PRIu64
	       ",\"last_doorbell\":\"0x%08x\",\"last_scratch\":\"0x%08x\",\"expect_scratch\":%s"
	       ",\"echo\":\"%s\",\"echo_peer\":\"%s\",\"echo_wrote\":\"0x%08x\",\"echo_read\":\"0x%08x\",\"device_gone\":%s",
	       m->view, m->frame.state, m->frame.pfn, m->file, m->writable ? "true" : "false", m->reads,
	       m->writes, m->changes, m->bar_reads_after_gone, m->last_db, m->last_scratch, expect,
	       m->echo ? m->echo : "none", m->echo_peer, m->echo_wrote, m->echo_read, gone ? "true" : "false");
}

/*
 * The dummy-page test, once the device is gone: the core gives every mapping of one uverbs file
 * the same zeroed page, so a word written through one mapping of a file reads back through
 * another mapping of the same file (in this process). A stale mapping of the BAR does not show
 * that: two different BAR pages are two pages, and QEMU's unassigned space drops the write.
 */
static void echo_test(unsigned int i)
{
	struct mapping *m = &maps[i], *peer = NULL, *w, *r;
	unsigned int j, off = OFF_ECHO + 8 * (i % 128);

	m->echo = "none";
	for (j = 0; j < nmaps && !peer; j++)
		if (j != i && !strcmp(maps[j].file, m->file) && (m->writable || maps[j].writable))
			peer = &maps[j];
	if (!peer || !m->file[0])
		return;
	w = m->writable ? m : peer;
	r = m->writable ? peer : m;
	fault_label = w->label;
	m->echo_wrote = 0xec000000u | (i << 16) | ((uint32_t)getpid() & 0xffff);
	w->page[off / 4] = m->echo_wrote;
	fault_label = r->label;
	m->echo_read = r->page[off / 4];
	fault_label = "main";
	m->echo = m->echo_read == m->echo_wrote ? "seen" : "lost";
	snprintf(m->echo_peer, sizeof(m->echo_peer), "%s", peer->label);
}

/* Doorbell pattern: SQ doorbell of QP 1 and CQ doorbell of CQ 1 (no such objects yet: the device
 * counts them as doorbells and logs guest errors), spaced so its poller sees each one. */
void write_doorbells(struct mapping *m)
{
	unsigned int i;
	bool scratch_ok = true;

	fault_label = m->label;
	for (i = 1; i <= opt.doorbells; i++) {
		m->doorbell = VRNIC_DB(1, i);
		m->page[OFF_SQ_DB / 4] = m->doorbell;
		m->page[OFF_CQ_DB / 4] = VRNIC_DB(1, i);
		m->scratch = 0xa5a50000u | i;
		m->page[m->scratch_off / 4] = m->scratch;
		if (m->page[m->scratch_off / 4] != m->scratch)
			scratch_ok = false;
		m->writes += 3;
		m->reads++;
		if (opt.doorbell_gap_ms)
			usleep(opt.doorbell_gap_ms * 1000);
	}
	fault_label = "main";
	report(m->label, "doorbells",
	       "\"count\":%u,\"last_sq_doorbell\":\"0x%08x\",\"read_back_sq_doorbell\":\"0x%08x\",\"scratch_read_back_ok\":%s",
	       opt.doorbells, m->doorbell, m->page[OFF_SQ_DB / 4], scratch_ok ? "true" : "false");
}

int add_mapping(const char *label, volatile uint32_t *page, bool writable, const struct context *c)
{
	struct mapping *m;

	if (nmaps >= MAX_MAPPINGS)
		return -1;
	m = &maps[nmaps++];
	memset(m, 0, sizeof(*m));
	snprintf(m->label, sizeof(m->label), "%s", label);
	snprintf(m->file, sizeof(m->file), "uar%u", c->resp.uar_index);
	m->page = page;
	m->writable = writable;
	m->scratch_off = OFF_SCRATCH + 8 * (nmaps - 1);
	return 0;
}

/* Moves a mapping's scratch word to another slot (a forked child) and writes it once. */
void claim_scratch(struct mapping *m, unsigned int slot)
{
	fault_label = m->label;
	m->scratch_off = OFF_SCRATCH + 8 * slot;
	m->scratch = 0xc1d00000u | slot;
	m->page[m->scratch_off / 4] = m->scratch;
	m->writes++;
	fault_label = "main";
}

int cmd_fd = -1;

/* Reads one command line if there is one; returns it (static buffer) or NULL. */
static const char *next_command(int timeout_ms)
{
	static char buf[256];
	static size_t have;
	struct pollfd p = { .fd = cmd_fd, .events = POLLIN };
	char *nl;
	ssize_t n;

	if (cmd_fd < 0) {
		if (timeout_ms > 0)
			usleep(timeout_ms * 1000);
		return NULL;
	}
	nl = memchr(buf, '\n', have);
	if (!nl) {
		if (poll(&p, 1, timeout_ms) <= 0)
			return NULL;
		n = read(cmd_fd, buf + have, sizeof(buf) - 1 - have);
		if (n <= 0) {
			cmd_fd = -1;	/* EOF: no more commands, keep going on the timers */
			return NULL;
		}
		have += n;
		nl = memchr(buf, '\n', have);
		if (!nl) {
			if (have >= sizeof(buf) - 1)
				have = 0;	/* an overlong line is dropped */
			return NULL;
		}
	}
	{
		static char line[256];
		size_t len = nl - buf;

		memcpy(line, buf, len);
		line[len] = '\0';
		if (len && line[len - 1] == '\r')
			line[len - 1] = '\0';
		memmove(buf, nl + 1, have - len - 1);
		have -= len + 1;
		return line;
	}
}

/*
 * Keeps reading and writing every mapping until told to stop, the watch time runs out, or the
 * device has been gone for settle_ms. Reports each change of what a mapping shows.
 */
void watch(const struct device *d, struct context *c, bool auto_start)
{
	bool watching = auto_start, gone = false, stop = false, first = true;
	double deadline = now_ms() + opt.watch_s * 1e3, gone_at = 0;
	unsigned int i;

	if (watching)
		report(NULL, "watching", "\"interval_ms\":%u,\"watch_s\":%.1f,\"settle_ms\":%u,\"mappings\":%u",
		       opt.interval_ms, opt.watch_s, opt.settle_ms, nmaps);
	while (!stop) {
		const char *cmd;

		if (watching) {
			for (i = 0; i < nmaps; i++)
				probe(d, &maps[i], gone, first);
			first = false;
			if (!gone && !device_present(d)) {
				struct ib_uverbs_query_device_resp qd;
				int err;

				gone = true;
				gone_at = now_ms();
				report(NULL, "device-gone", "\"ibdev\":\"%s\"", d->ibdev);
				/* uverbs refuses write() from a process other than the opener (its creds differ). */
				err = c && c->fd >= 0 && c->owner == getpid() ? uv_query_device(c->fd, &qd) : -EBADF;
				report(NULL, "uverbs-after-gone", "\"query_device_errno\":%d,\"errno_name\":\"%s\"",
				       -err, err ? strerrorname_np(-err) ?: "?" : "none");
			}
			if (gone && now_ms() - gone_at >= opt.settle_ms)
				break;
			if (opt.watch_s > 0 && now_ms() >= deadline) {
				report(NULL, "watch-timeout", "\"device_gone\":%s", gone ? "true" : "false");
				break;
			}
		}
		cmd = next_command(opt.interval_ms);
		if (!cmd)
			continue;
		report(NULL, "command", "\"command\":\"%.64s\"", cmd);
		if (!strcmp(cmd, "watch")) {
			if (!watching) {
				watching = true;
				deadline = now_ms() + opt.watch_s * 1e3;
				report(NULL, "watching", "\"interval_ms\":%u,\"mappings\":%u", opt.interval_ms, nmaps);
			}
		} else if (!strcmp(cmd, "stop") || !strcmp(cmd, "quit")) {
			stop = true;
		} else if (!strcmp(cmd, "status")) {
			for (i = 0; i < nmaps; i++)
				report_summary(&maps[i], gone);
		} else if (!strcmp(cmd, "close-context")) {
			if (c && c->fd >= 0) {
				close(c->fd);
				close(c->async_fd);
				c->fd = c->async_fd = -1;
				report(NULL, "context-closed", "\"mappings_kept\":%u", nmaps);
			}
		} else {
			report(NULL, "command-error", "\"error\":\"unknown command\"");
		}
	}
	if (gone)
		for (i = 0; i < nmaps; i++)
			echo_test(i);
	for (i = 0; i < nmaps; i++)
		report_summary(&maps[i], gone);
}


volatile uint32_t *map_uars(const struct device *d, struct context *c, unsigned int npages)
{
	void *p;
	struct frame f;

	p = mmap(NULL, (size_t)npages * VRNIC_UAR_PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, c->fd,
		 (off_t)c->resp.uar_mmap_offset);
	if (p == MAP_FAILED) {
		report(NULL, "error", "\"op\":\"mmap\",\"errno\":%d,\"error\":\"%s\"", errno, strerror(errno));
		return NULL;
	}
	frame_of(d, p, &f);	/* before the first touch: not faulted in yet, or already populated */
	report(NULL, "mapped", "\"addr\":\"%p\",\"len\":%zu,\"offset\":\"0x%llx\",\"frame_before_touch\":\"%s\"",
	       p, (size_t)npages * VRNIC_UAR_PAGE_SIZE, (unsigned long long)c->resp.uar_mmap_offset, f.state);
	return p;
}

void report_frames(const struct device *d, const char *event)
{
	unsigned int i;

	for (i = 0; i < nmaps; i++) {
		frame_of(d, maps[i].page, &maps[i].frame);
		report(maps[i].label, event, "\"addr\":\"%p\",\"frame\":\"%s\",\"pfn\":\"0x%" PRIx64 "\",\"file\":\"%s\",\"writable\":%s",
		       (void *)maps[i].page, maps[i].frame.state, maps[i].frame.pfn, maps[i].file,
		       maps[i].writable ? "true" : "false");
	}
}

/* ---- scenarios with several processes ------------------------------------------------------ */

