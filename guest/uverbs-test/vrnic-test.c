// SPDX-License-Identifier: GPL-2.0
/*
 * vrnic-test: the guest program that holds a vrnic UAR mapping across a hot unplug and reports,
 * as machine-parseable lines, what it read, where the mapping pointed and whether a signal hit it.
 *
 * It speaks the uverbs write() ABI directly (no rdma-core). Every report is one line
 *   VRNIC-TEST {"event":"...","t_ms":...,"pid":...,"label":"...",...}
 * written with a single write(2) so lines from several processes do not mix.
 * Exit codes: 0 done, 1 an operation failed, 2 bad usage, 3 no vrnic device, 4 killed by a
 * SIGBUS/SIGSEGV on the mapping (reported first), 5 a child process failed (fork scenario).
 * See guest/uverbs-test/README.md for the events and the command protocol.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <rdma/ib_user_verbs.h>
#include <rdma/ib_user_ioctl_verbs.h>
#include "vrnic-abi.h"

#define VERSION "1"
#define UAR_PAGE 4096u
#define OFF_SQ_DB 0x000u	/* first QP doorbell slot of a page */
#define OFF_CQ_DB 0x008u	/* first CQ doorbell slot */
#define OFF_SCRATCH 0x800u	/* the device ignores 0x800..0xfff */
#define OFF_ECHO 0xc00u		/* the dummy-page test's words, one per mapping */

enum {
	EXIT_OK = 0,
	EXIT_FAIL = 1,
	EXIT_USAGE = 2,
	EXIT_NO_DEVICE = 3,
	EXIT_SIGNAL = 4,
	EXIT_CHILD = 5,
};

/* ---- options ------------------------------------------------------------------------------- */

static struct {
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
	const char *pfn_dev;
	unsigned int procs;
	unsigned int nops;
	bool comp_event;
} opt = {
	.device = NULL,
	.wait_device_s = 5,
	.uars = 1,
	.scenario = "single",
	.doorbells = 16,
	.doorbell_gap_ms = 20,
	.watch_s = 0,
	.interval_ms = 20,
	.settle_ms = 2000,
	.commands = NULL,
	.output = NULL,
	.pfn_dev = "/dev/vrnic_pfn",
	.procs = 0,	/* per scenario: many 32, race-close 8 */
	.nops = 4,
};

/* ---- reporting ----------------------------------------------------------------------------- */

static int out_fd = 1;
static struct timespec t0;
static const char *volatile cur_label = "main";

static double now_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (t.tv_sec - t0.tv_sec) * 1e3 + (t.tv_nsec - t0.tv_nsec) / 1e6;
}

/* One report line: event, time, pid, label, then the caller's JSON fields (no leading comma). */
static void report(const char *label, const char *event, const char *fmt, ...)
{
	char line[2048];
	int n;

	n = snprintf(line, sizeof(line), "VRNIC-TEST {\"event\":\"%s\",\"t_ms\":%.3f,\"pid\":%d,\"label\":\"%s\"",
		     event, now_ms(), (int)getpid(), label ? label : "main");
	if (fmt && *fmt && n < (int)sizeof(line)) {
		va_list ap;

		line[n++] = ',';
		va_start(ap, fmt);
		n += vsnprintf(line + n, sizeof(line) - n, fmt, ap);
		va_end(ap);
	}
	if (n > (int)sizeof(line) - 3)
		n = sizeof(line) - 3;
	line[n++] = '}';
	line[n++] = '\n';
	if (write(out_fd, line, n) < 0 && out_fd != 1)
		(void)!write(1, line, n);
}

/* Async-signal-safe formatting for the signal handler. */
static size_t fmt_u64(char *p, uint64_t v, int base)
{
	char tmp[24];
	size_t n = 0, i;

	do {
		tmp[n++] = "0123456789abcdef"[v % base];
		v /= base;
	} while (v);
	for (i = 0; i < n; i++)
		p[i] = tmp[n - 1 - i];
	return n;
}

static size_t fmt_str(char *p, const char *s)
{
	size_t n = strlen(s);

	memcpy(p, s, n);
	return n;
}

static void on_fault(int sig, siginfo_t *si, void *uc)
{
	char line[256];
	size_t n = 0;
	struct timespec t;
	uint64_t ms;

	(void)uc;
	clock_gettime(CLOCK_MONOTONIC, &t);
	ms = (t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000;
	n += fmt_str(line + n, "VRNIC-TEST {\"event\":\"signal\",\"t_ms\":");
	n += fmt_u64(line + n, ms, 10);
	n += fmt_str(line + n, ",\"pid\":");
	n += fmt_u64(line + n, (uint64_t)getpid(), 10);
	n += fmt_str(line + n, ",\"label\":\"");
	n += fmt_str(line + n, cur_label);
	n += fmt_str(line + n, "\",\"signal\":\"");
	n += fmt_str(line + n, sig == SIGBUS ? "SIGBUS" : "SIGSEGV");
	n += fmt_str(line + n, "\",\"si_code\":");
	n += fmt_u64(line + n, (uint64_t)(unsigned int)si->si_code, 10);
	n += fmt_str(line + n, ",\"addr\":\"0x");
	n += fmt_u64(line + n, (uint64_t)(uintptr_t)si->si_addr, 16);
	n += fmt_str(line + n, "\"}\n");
	(void)!write(out_fd, line, n);
	_exit(EXIT_SIGNAL);
}

/* ---- the device ---------------------------------------------------------------------------- */

struct device {
	char path[300];		/* /dev/infiniband/uverbsN */
	char ibdev[64];		/* vrnic0 */
	uint64_t bar2_start, bar2_end;	/* physical range of the UAR BAR (inclusive end) */
};

static int read_small(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -1;
	n = read(fd, buf, len - 1);
	close(fd);
	if (n < 0)
		return -1;
	buf[n] = '\0';
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
		buf[--n] = '\0';
	return 0;
}

/* The first uverbs device whose ib device is a vrnic (or the one --device names). */
static bool find_device(struct device *d)
{
	DIR *dir = opendir("/sys/class/infiniband_verbs");
	struct dirent *de;
	bool found = false;

	if (!dir)
		return false;
	while (!found && (de = readdir(dir))) {
		char p[320], ibdev[64];

		if (strncmp(de->d_name, "uverbs", 6))
			continue;
		snprintf(p, sizeof(p), "/sys/class/infiniband_verbs/%s/ibdev", de->d_name);
		if (read_small(p, ibdev, sizeof(ibdev)))
			continue;
		snprintf(d->path, sizeof(d->path), "/dev/infiniband/%s", de->d_name);
		if (opt.device ? strcmp(opt.device, d->path) : strncmp(ibdev, "vrnic", 5))
			continue;
		snprintf(d->ibdev, sizeof(d->ibdev), "%s", ibdev);
		found = true;
	}
	closedir(dir);
	return found;
}

static void read_bar2(struct device *d)
{
	char p[160], buf[1024], *line;
	int i;

	d->bar2_start = d->bar2_end = 0;
	snprintf(p, sizeof(p), "/sys/class/infiniband/%s/device/resource", d->ibdev);
	if (read_small(p, buf, sizeof(buf)))
		return;
	line = buf;
	for (i = 0; i < 2 && line; i++) {
		line = strchr(line, '\n');
		if (line)
			line++;
	}
	if (line)
		sscanf(line, "%" SCNx64 " %" SCNx64, &d->bar2_start, &d->bar2_end);
}

static bool device_present(const struct device *d)
{
	char p[160];

	snprintf(p, sizeof(p), "/sys/class/infiniband/%s", d->ibdev);
	return access(p, F_OK) == 0;
}

/* Whether the PCI bus has a vrnic function (then its uverbs device is worth waiting for). */
static bool pci_device_present(void)
{
	DIR *dir = opendir("/sys/bus/pci/devices");
	struct dirent *de;
	bool found = false;

	while (dir && !found && (de = readdir(dir))) {
		char p[320], v[16], dv[16];

		snprintf(p, sizeof(p), "/sys/bus/pci/devices/%s/vendor", de->d_name);
		if (read_small(p, v, sizeof(v)))
			continue;
		snprintf(p, sizeof(p), "/sys/bus/pci/devices/%s/device", de->d_name);
		if (read_small(p, dv, sizeof(dv)))
			continue;
		found = !strcmp(v, "0x1234") && !strcmp(dv, "0x7a01");
	}
	if (dir)
		closedir(dir);
	return found;
}

/* What the guest has when there is no vrnic: for the "no-device" report. */
static void report_no_device(double waited)
{
	DIR *dir;
	struct dirent *de;
	char ib[512] = "";
	size_t n = 0;

	dir = opendir("/sys/class/infiniband");
	while (dir && (de = readdir(dir))) {
		if (de->d_name[0] == '.')
			continue;
		n += snprintf(ib + n, sizeof(ib) - n, "%s\"%s\"", n ? "," : "", de->d_name);
		if (n >= sizeof(ib))
			break;
	}
	if (dir)
		closedir(dir);
	if (pci_device_present())
		report(NULL, "no-device",
		       "\"reason\":\"a vrnic PCI function exists but no uverbs device after %.1f s (driver not bound?)\",\"pci_device_present\":true,\"ib_devices\":[%s],\"exit_code\":%d",
		       waited, ib, EXIT_NO_DEVICE);
	else
		report(NULL, "no-device",
		       "\"reason\":\"no vrnic PCI function (vendor 0x1234 device 0x7a01) and no vrnic uverbs device\",\"pci_device_present\":false,\"ib_devices\":[%s],\"exit_code\":%d",
		       ib, EXIT_NO_DEVICE);
}

/* ---- the invalid_mem canary --------------------------------------------------------------- */

/* The PCI address (sysfs name) of the first function with the device's vendor:device, or false. */
static bool find_pci_function(char *name, size_t len)
{
	DIR *dir = opendir("/sys/bus/pci/devices");
	struct dirent *de;
	bool found = false;

	while (dir && !found && (de = readdir(dir))) {
		char p[320], v[16], dv[16];

		snprintf(p, sizeof(p), "/sys/bus/pci/devices/%s/vendor", de->d_name);
		if (read_small(p, v, sizeof(v)))
			continue;
		snprintf(p, sizeof(p), "/sys/bus/pci/devices/%s/device", de->d_name);
		if (read_small(p, dv, sizeof(dv)))
			continue;
		if (!strcmp(v, "0x1234") && !strcmp(dv, "0x7a01")) {
			snprintf(name, len, "%s", de->d_name);
			found = true;
		}
	}
	if (dir)
		closedir(dir);
	return found;
}

/* Line `index` of a sysfs resource file: start, end (inclusive), flags; false when absent or empty. */
static bool resource_line(const char *path, unsigned int index, uint64_t *start, uint64_t *end,
			  uint64_t *flags)
{
	char buf[2048], *line = buf;
	uint64_t fl = 0;
	unsigned int i;

	if (read_small(path, buf, sizeof(buf)))
		return false;
	for (i = 0; i < index && line; i++) {
		line = strchr(line, '\n');
		if (line)
			line++;
	}
	if (!line || sscanf(line, "%" SCNx64 " %" SCNx64 " %" SCNx64, start, end, &fl) < 2)
		return false;
	if (flags)
		*flags = fl;
	return *start != 0 && *end > *start;
}

/*
 * Reads one word of an address nothing decodes: the first page of the memory window of the
 * device's upstream bridge that none of the device's BARs covers. The access takes the path a
 * stale BAR mapping takes once QEMU has removed the BARs (through the root port into an empty
 * secondary bus), so QEMU's -d invalid_mem log must show it: proof that the log records such
 * accesses and that the verdict parses its wording. Made through /dev/mem, before any module loads.
 */
static int canary(void)
{
	char fn[300], p[PATH_MAX + 16], real[PATH_MAX], *slash;
	uint64_t ws = 0, we = 0, addr, bs[6], be[6], s, e, fl;
	unsigned int i;
	bool moved = true;
	volatile uint32_t *page;
	uint32_t v;
	int fd;

	if (!find_pci_function(fn, sizeof(fn))) {
		report(NULL, "canary-error", "\"reason\":\"no vrnic PCI function\"");
		return EXIT_NO_DEVICE;
	}
	snprintf(p, sizeof(p), "/sys/bus/pci/devices/%s", fn);
	if (!realpath(p, real) || !(slash = strrchr(real, '/'))) {
		report(NULL, "canary-error", "\"reason\":\"no sysfs path for %s\"", fn);
		return EXIT_FAIL;
	}
	*slash = '\0';
	snprintf(p, sizeof(p), "/sys/bus/pci/devices/%s/resource", fn);
	for (i = 0; i < 6; i++)
		if (!resource_line(p, i, &bs[i], &be[i], NULL))
			bs[i] = be[i] = 0;
	/*
	 * The bridge's sysfs resource lists its BARs, ROM, SR-IOV BARs (when configured), then its
	 * windows: take the memory window (IORESOURCE_MEM) that holds BAR2.
	 */
	snprintf(p, sizeof(p), "%s/resource", real);
	for (i = 7; i < 24 && !we; i++)
		if (resource_line(p, i, &s, &e, &fl) && (fl & 0x200) && bs[2] >= s && bs[2] <= e) {
			ws = s;
			we = e;
		}
	if (!we) {
		report(NULL, "canary-error", "\"reason\":\"no memory window on the bridge above %s holds BAR2\"", fn);
		return EXIT_FAIL;
	}
	for (addr = ws; moved;) {
		moved = false;
		for (i = 0; i < 6; i++) {
			if (be[i] && addr <= be[i] && addr + UAR_PAGE - 1 >= bs[i]) {
				addr = (be[i] + UAR_PAGE) & ~(uint64_t)(UAR_PAGE - 1);
				moved = true;
			}
		}
	}
	if (addr + 4 > we) {
		report(NULL, "canary-error", "\"reason\":\"the BARs fill the bridge window [0x%" PRIx64 ", 0x%" PRIx64 "]\"", ws, we);
		return EXIT_FAIL;
	}
	fd = open("/dev/mem", O_RDONLY | O_SYNC | O_CLOEXEC);
	if (fd < 0) {
		report(NULL, "canary-error", "\"reason\":\"/dev/mem: %s\"", strerror(errno));
		return EXIT_FAIL;
	}
	page = mmap(NULL, UAR_PAGE, PROT_READ, MAP_SHARED, fd, (off_t)addr);
	close(fd);
	if (page == MAP_FAILED) {
		report(NULL, "canary-error", "\"reason\":\"mmap of /dev/mem at 0x%" PRIx64 ": %s\"", addr, strerror(errno));
		return EXIT_FAIL;
	}
	v = page[0];
	munmap((void *)page, UAR_PAGE);
	report(NULL, "canary", "\"addr\":\"0x%" PRIx64 "\",\"read\":\"0x%08x\",\"window\":[\"0x%" PRIx64 "\",\"0x%" PRIx64 "\"],\"function\":\"%s\"",
	       addr, v, ws, we, fn);
	return EXIT_OK;
}

/* ---- uverbs write() ABI ------------------------------------------------------------------- */

struct context {
	pid_t owner;	/* the process that opened the fd: the only one that may write() to it */
	int fd;
	int async_fd;
	struct vrnic_alloc_ucontext_resp resp;
};

static int get_context(const struct device *d, unsigned int num_uars, struct context *c)
{
	struct {
		struct ib_uverbs_cmd_hdr hdr;
		struct ib_uverbs_get_context cmd;
		struct vrnic_alloc_ucontext_req drv;
	} req;
	struct {
		struct ib_uverbs_get_context_resp core;
		struct vrnic_alloc_ucontext_resp drv;
	} resp;

	memset(&req, 0, sizeof(req));
	memset(&resp, 0, sizeof(resp));
	c->fd = open(d->path, O_RDWR | O_CLOEXEC);
	if (c->fd < 0)
		return -errno;
	req.hdr.command = IB_USER_VERBS_CMD_GET_CONTEXT;
	req.hdr.in_words = sizeof(req) / 4;
	req.hdr.out_words = sizeof(resp) / 4;
	req.cmd.response = (uintptr_t)&resp;
	req.drv.num_uars = num_uars;
	if (write(c->fd, &req, sizeof(req)) != sizeof(req)) {
		int err = -errno;

		close(c->fd);
		c->fd = -1;
		return err;
	}
	c->async_fd = resp.core.async_fd;
	c->resp = resp.drv;
	c->owner = getpid();
	return 0;
}

/* QUERY_DEVICE through the fd: works on a live context, EIO after disassociation. */
static int query_device(int fd, struct ib_uverbs_query_device_resp *out)
{
	struct {
		struct ib_uverbs_cmd_hdr hdr;
		struct ib_uverbs_query_device cmd;
	} req;

	memset(&req, 0, sizeof(req));
	memset(out, 0, sizeof(*out));
	req.hdr.command = IB_USER_VERBS_CMD_QUERY_DEVICE;
	req.hdr.in_words = sizeof(req) / 4;
	req.hdr.out_words = sizeof(*out) / 4;
	req.cmd.response = (uintptr_t)out;
	if (write(fd, &req, sizeof(req)) != sizeof(req))
		return -errno;
	return 0;
}

/* A PD and an MR held across the unplug, so their destruction is part of the removal. */
struct verbs {
	bool have_pd, have_mr;
	uint32_t pd_handle, pdn, mr_handle, lkey, rkey;
	void *buf;
	size_t len;
};

static int uverbs_cmd(int fd, uint32_t command, void *req, size_t len, size_t out_len)
{
	struct ib_uverbs_cmd_hdr *hdr = req;

	hdr->command = command;
	hdr->in_words = len / 4;
	hdr->out_words = out_len / 4;
	if (write(fd, req, len) != (ssize_t)len)
		return -errno;
	return 0;
}

static void verbs_setup(int fd, struct verbs *v)
{
	struct {
		struct ib_uverbs_cmd_hdr hdr;
		struct ib_uverbs_alloc_pd cmd;
	} pd_req;
	struct {
		struct ib_uverbs_alloc_pd_resp core;
		struct vrnic_alloc_pd_resp drv;
	} pd_resp;
	struct {
		struct ib_uverbs_cmd_hdr hdr;
		struct ib_uverbs_reg_mr cmd;
	} mr_req;
	struct ib_uverbs_reg_mr_resp mr_resp;
	int pd_err, mr_err = 0;

	memset(v, 0, sizeof(*v));
	memset(&pd_req, 0, sizeof(pd_req));
	memset(&pd_resp, 0, sizeof(pd_resp));
	pd_req.cmd.response = (uintptr_t)&pd_resp;
	pd_err = uverbs_cmd(fd, IB_USER_VERBS_CMD_ALLOC_PD, &pd_req, sizeof(pd_req), sizeof(pd_resp));
	if (!pd_err) {
		v->have_pd = true;
		v->pd_handle = pd_resp.core.pd_handle;
		v->pdn = pd_resp.drv.pdn;
		/* Three pages, starting 100 bytes into the first: a page list with an offset. */
		v->len = 2 * UAR_PAGE;
		v->buf = aligned_alloc(UAR_PAGE, 3 * UAR_PAGE);
		memset(v->buf, 0x5a, 3 * UAR_PAGE);
		memset(&mr_req, 0, sizeof(mr_req));
		memset(&mr_resp, 0, sizeof(mr_resp));
		mr_req.cmd.response = (uintptr_t)&mr_resp;
		mr_req.cmd.start = (uintptr_t)v->buf + 100;
		mr_req.cmd.length = v->len;
		mr_req.cmd.hca_va = mr_req.cmd.start;
		mr_req.cmd.pd_handle = v->pd_handle;
		mr_req.cmd.access_flags = IB_UVERBS_ACCESS_LOCAL_WRITE | IB_UVERBS_ACCESS_REMOTE_READ;
		mr_err = uverbs_cmd(fd, IB_USER_VERBS_CMD_REG_MR, &mr_req, sizeof(mr_req), sizeof(mr_resp));
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

static void verbs_teardown(int fd, struct verbs *v)
{
	struct {
		struct ib_uverbs_cmd_hdr hdr;
		struct ib_uverbs_dereg_mr cmd;
	} mr_req;
	struct {
		struct ib_uverbs_cmd_hdr hdr;
		struct ib_uverbs_dealloc_pd cmd;
	} pd_req;
	int mr_err = 0, pd_err = 0;

	if (!v->have_pd)
		return;
	if (v->have_mr) {
		memset(&mr_req, 0, sizeof(mr_req));
		mr_req.cmd.mr_handle = v->mr_handle;
		mr_err = uverbs_cmd(fd, IB_USER_VERBS_CMD_DEREG_MR, &mr_req, sizeof(mr_req), 0);
	}
	memset(&pd_req, 0, sizeof(pd_req));
	pd_req.cmd.pd_handle = v->pd_handle;
	pd_err = uverbs_cmd(fd, IB_USER_VERBS_CMD_DEALLOC_PD, &pd_req, sizeof(pd_req), 0);
	/*
	 * Destroy commands succeed even after disassociation: the core destroyed the hardware
	 * objects then and only lets user space release its handles now.
	 */
	report(NULL, "verbs-teardown", "\"dereg_mr_errno\":%d,\"dealloc_pd_errno\":%d", -mr_err, -pd_err);
	free(v->buf);
	v->have_pd = v->have_mr = false;
}

/*
 * The minimal data path: a user CQ and RC QP (rings in one page each), RESET -> INIT -> RTR ->
 * RTS, `nops` NOP WQEs, one SQ doorbell through the UAR mapping, and the CQEs polled from the
 * ring. The CQ and QP stay alive across the unplug like the PD and MR.
 */
struct datapath {
	bool have_cq, have_qp;
	int comp_channel;	/* --comp-event: the completion channel the CQ reports to, else -1 */
	uint32_t cq_handle, qp_handle, cqn, qpn, cq_db, qp_db, cq_entries;
	volatile uint8_t *cq_ring;
	volatile uint8_t *sq_ring;
};

static int modify_qp_state(int fd, uint32_t qp_handle, uint8_t state)
{
	struct {
		struct ib_uverbs_cmd_hdr hdr;
		struct ib_uverbs_modify_qp cmd;
	} req;

	memset(&req, 0, sizeof(req));
	req.cmd.qp_handle = qp_handle;
	req.cmd.attr_mask = 1;	/* IB_QP_STATE */
	req.cmd.qp_state = state;
	return uverbs_cmd(fd, IB_USER_VERBS_CMD_MODIFY_QP, &req, sizeof(req), 0);
}

#define COMP_EVENT_CQ_TAG 0x7a01c0ffeeULL

static int create_comp_channel(int fd)
{
	struct {
		struct ib_uverbs_cmd_hdr hdr;
		struct ib_uverbs_create_comp_channel cmd;
	} req;
	struct ib_uverbs_create_comp_channel_resp resp;
	int err;

	memset(&req, 0, sizeof(req));
	memset(&resp, 0, sizeof(resp));
	req.cmd.response = (uintptr_t)&resp;
	err = uverbs_cmd(fd, IB_USER_VERBS_CMD_CREATE_COMP_CHANNEL, &req, sizeof(req), sizeof(resp));
	return err ? err : (int)resp.fd;
}

/*
 * --comp-event: what ibv_req_notify_cq + ibv_get_cq_event do, on the raw ABI. Arm the CQ (arm
 * word: ARM, sequence 1, the consumer index), post one more NOP, and wait on the completion
 * channel for the event the driver's comp_handler queues; it names the CQ by the user_handle
 */
static void comp_event_run(volatile uint32_t *uar, struct datapath *dp, unsigned int ci)
{
	struct ib_uverbs_comp_event_desc ev;
	struct pollfd pfd = { .fd = dp->comp_channel, .events = POLLIN };
	volatile uint8_t *w = dp->sq_ring + 64 * (ci % 64);
	double t_arm, t_event = 0;
	int n = 0, err = 0;
	ssize_t got = 0;

	memset(&ev, 0, sizeof(ev));
	uar[(dp->cq_db + 4) / 4] = 0x80000000u | (1u << 16) | (ci & 0xffff);
	t_arm = now_ms();
	w[0] = 0;	/* NOP */
	*(volatile uint64_t *)(w + 8) = 0x7a020000u + ci;
	__sync_synchronize();
	uar[dp->qp_db / 4] = (dp->qpn << 16) | ((ci + 1) & 0xffff);
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

static void datapath_run(int fd, const struct verbs *v, volatile uint32_t *uar, struct datapath *dp)
{
	struct {
		struct ib_uverbs_cmd_hdr hdr;
		struct ib_uverbs_create_cq cmd;
		struct vrnic_create_cq_req drv;
	} cq_req;
	struct {
		struct ib_uverbs_create_cq_resp core;
		struct vrnic_create_cq_resp drv;
	} cq_resp;
	struct {
		struct ib_uverbs_cmd_hdr hdr;
		struct ib_uverbs_create_qp cmd;
		struct vrnic_create_qp_req drv;
	} qp_req;
	struct {
		struct ib_uverbs_create_qp_resp core;
		struct vrnic_create_qp_resp drv;
	} qp_resp;
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
		dp->comp_channel = create_comp_channel(fd);
		if (dp->comp_channel < 0) {
			err = dp->comp_channel;
			goto out;
		}
	}
	dp->cq_ring = aligned_alloc(UAR_PAGE, UAR_PAGE);
	dp->sq_ring = aligned_alloc(UAR_PAGE, UAR_PAGE);
	memset((void *)dp->cq_ring, 0, UAR_PAGE);
	memset((void *)dp->sq_ring, 0, UAR_PAGE);

	memset(&cq_req, 0, sizeof(cq_req));
	memset(&cq_resp, 0, sizeof(cq_resp));
	cq_req.cmd.response = (uintptr_t)&cq_resp;
	cq_req.cmd.cqe = 64;
	cq_req.cmd.comp_channel = dp->comp_channel;
	/* A completion event names its CQ by this value (ibv_cq's cq_context in libibverbs). */
	if (opt.comp_event)
		cq_req.cmd.user_handle = COMP_EVENT_CQ_TAG;
	cq_req.drv.buf_addr = (uintptr_t)dp->cq_ring;
	err = uverbs_cmd(fd, IB_USER_VERBS_CMD_CREATE_CQ, &cq_req, sizeof(cq_req), sizeof(cq_resp));
	if (err)
		goto out;
	dp->have_cq = true;
	dp->cq_handle = cq_resp.core.cq_handle;
	dp->cqn = cq_resp.drv.cqn;
	dp->cq_db = cq_resp.drv.doorbell_offset;
	dp->cq_entries = cq_resp.drv.entries;

	step = "create-qp";
	memset(&qp_req, 0, sizeof(qp_req));
	memset(&qp_resp, 0, sizeof(qp_resp));
	qp_req.cmd.response = (uintptr_t)&qp_resp;
	qp_req.cmd.pd_handle = v->pd_handle;
	qp_req.cmd.send_cq_handle = dp->cq_handle;
	qp_req.cmd.recv_cq_handle = dp->cq_handle;
	qp_req.cmd.max_send_wr = 64;
	qp_req.cmd.max_send_sge = 1;
	qp_req.cmd.qp_type = 2;	/* IB_QPT_RC */
	qp_req.drv.sq_addr = (uintptr_t)dp->sq_ring;
	err = uverbs_cmd(fd, IB_USER_VERBS_CMD_CREATE_QP, &qp_req, sizeof(qp_req), sizeof(qp_resp));
	if (err)
		goto out;
	dp->have_qp = true;
	dp->qp_handle = qp_resp.core.qp_handle;
	dp->qpn = qp_resp.drv.qpn;
	dp->qp_db = qp_resp.drv.doorbell_offset;

	step = "modify-qp";
	for (i = 1; i <= 3 && !mod_err; i++)	/* INIT, RTR, RTS */
		mod_err = modify_qp_state(fd, dp->qp_handle, i);
	if (mod_err) {
		err = mod_err;
		goto out;
	}

	step = "nop";
	if (dp->qp_db >= OFF_SCRATCH || dp->cq_db >= OFF_SCRATCH) {
		err = -EPROTO;
		goto out;
	}
	for (i = 0; i < opt.nops && i < 64; i++) {
		volatile uint8_t *w = dp->sq_ring + 64 * i;

		w[0] = 0;	/* NOP */
		*(volatile uint64_t *)(w + 8) = 0x7a010000u + i;
	}
	__sync_synchronize();
	t0w = now_ms();
	uar[dp->qp_db / 4] = (dp->qpn << 16) | (i & 0xffff);
	/* The device polls the UAR page: give it a bounded while to answer. */
	while (done < i && now_ms() - t0w < 3000) {
		volatile uint8_t *e = dp->cq_ring + 32 * done;

		if (!(*(volatile uint32_t *)(e + 0x1c) & 1)) {
			usleep(200);
			continue;
		}
		__sync_synchronize();
		if (e[0x11] == 0)
			ok++;
		if (*(volatile uint64_t *)e == 0x7a010000u + done && *(volatile uint32_t *)(e + 8) == dp->qpn)
			wr_ok++;
		done++;
	}
	t_done = now_ms();
	/* Hand the slots back: the CQ doorbell carries the consumer index. */
	uar[dp->cq_db / 4] = (dp->cqn << 16) | (done & 0xffff);
	err = done == i ? 0 : -ETIMEDOUT;
	if (!err && opt.comp_event)
		comp_event_run(uar, dp, done);
out:
	report(NULL, "nop", "\"step\":\"%s\",\"errno\":%d,\"cqn\":%u,\"qpn\":%u,\"cq_doorbell\":\"0x%x\",\"qp_doorbell\":\"0x%x\",\"posted\":%u,\"completed\":%u,\"status_ok\":%u,\"wr_id_ok\":%u,\"doorbell_to_last_cqe_ms\":%.3f",
	       err ? step : "done", -err, dp->cqn, dp->qpn, dp->cq_db, dp->qp_db, opt.nops < 64 ? opt.nops : 64,
	       done, ok, wr_ok, t0w ? t_done - t0w : 0.0);
}

static void datapath_teardown(int fd, struct datapath *dp)
{
	struct {
		struct ib_uverbs_cmd_hdr hdr;
		struct ib_uverbs_destroy_qp cmd;
	} qp_req;
	struct ib_uverbs_destroy_qp_resp qp_resp;
	struct {
		struct ib_uverbs_cmd_hdr hdr;
		struct ib_uverbs_destroy_cq cmd;
	} cq_req;
	struct ib_uverbs_destroy_cq_resp cq_resp;
	int qp_err = 0, cq_err = 0;

	if (!dp->have_cq)
		goto free;
	if (dp->have_qp) {
		memset(&qp_req, 0, sizeof(qp_req));
		qp_req.cmd.response = (uintptr_t)&qp_resp;
		qp_req.cmd.qp_handle = dp->qp_handle;
		qp_err = uverbs_cmd(fd, IB_USER_VERBS_CMD_DESTROY_QP, &qp_req, sizeof(qp_req), sizeof(qp_resp));
	}
	memset(&cq_req, 0, sizeof(cq_req));
	cq_req.cmd.response = (uintptr_t)&cq_resp;
	cq_req.cmd.cq_handle = dp->cq_handle;
	cq_err = uverbs_cmd(fd, IB_USER_VERBS_CMD_DESTROY_CQ, &cq_req, sizeof(cq_req), sizeof(cq_resp));
	report(NULL, "nop-teardown", "\"destroy_qp_errno\":%d,\"destroy_cq_errno\":%d", -qp_err, -cq_err);
free:
	free((void *)dp->cq_ring);
	free((void *)dp->sq_ring);
	dp->cq_ring = dp->sq_ring = NULL;
	if (dp->comp_channel >= 0)
		close(dp->comp_channel);
	dp->comp_channel = -1;
	dp->have_cq = dp->have_qp = false;
}

/* ---- the page-table helper ------------------------------------------------------------------ */

struct frame {
	char state[16];		/* bar, ram, not-present, no-vma, unknown */
	uint64_t pfn;
};

static int pfn_fd = -1;
static pid_t pfn_fd_owner;

static void frame_of(const struct device *d, const volatile void *addr, struct frame *f)
{
	char q[64], a[256];
	ssize_t n;
	char *p;

	memset(f, 0, sizeof(*f));
	snprintf(f->state, sizeof(f->state), "unknown");
	if (pfn_fd < 0 || pfn_fd_owner != getpid()) {
		/* Each process asks on its own open file: the answer buffer is per file. */
		if (pfn_fd >= 0)
			close(pfn_fd);
		pfn_fd = open(opt.pfn_dev, O_RDWR | O_CLOEXEC);
		pfn_fd_owner = getpid();
		if (pfn_fd < 0)
			return;
	}
	n = snprintf(q, sizeof(q), "%d 0x%lx", (int)getpid(), (unsigned long)(uintptr_t)addr);
	if (write(pfn_fd, q, n) != n)
		return;
	n = pread(pfn_fd, a, sizeof(a) - 1, 0);
	if (n <= 0)
		return;
	a[n] = '\0';
	if (!strncmp(a, "present ", 8)) {
		uint64_t phys;

		p = strstr(a, "pfn=0x");
		if (!p)
			return;
		f->pfn = strtoull(p + 6, NULL, 16);
		phys = f->pfn * UAR_PAGE;
		snprintf(f->state, sizeof(f->state), "%s",
			 d->bar2_end && phys >= d->bar2_start && phys <= d->bar2_end ? "bar" : "ram");
	} else if (!strncmp(a, "not-present", 11)) {
		snprintf(f->state, sizeof(f->state), "not-present");
	} else if (!strncmp(a, "no-vma", 6)) {
		snprintf(f->state, sizeof(f->state), "no-vma");
	}
}

/* ---- mappings and the watch loop ------------------------------------------------------------ */

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
static struct mapping maps[MAX_MAPPINGS];
static unsigned int nmaps;

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

	cur_label = m->label;
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
	cur_label = "main";
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
	cur_label = w->label;
	m->echo_wrote = 0xec000000u | (i << 16) | ((uint32_t)getpid() & 0xffff);
	w->page[off / 4] = m->echo_wrote;
	cur_label = r->label;
	m->echo_read = r->page[off / 4];
	cur_label = "main";
	m->echo = m->echo_read == m->echo_wrote ? "seen" : "lost";
	snprintf(m->echo_peer, sizeof(m->echo_peer), "%s", peer->label);
}

/* Doorbell pattern: SQ doorbell of QP 1 and CQ doorbell of CQ 1 (no such objects yet: the device
 * counts them as doorbells and logs guest errors), spaced so its poller sees each one. */
static void write_doorbells(struct mapping *m)
{
	unsigned int i;
	bool scratch_ok = true;

	cur_label = m->label;
	for (i = 1; i <= opt.doorbells; i++) {
		m->doorbell = (1u << 16) | (i & 0xffff);
		m->page[OFF_SQ_DB / 4] = m->doorbell;
		m->page[OFF_CQ_DB / 4] = (1u << 16) | (i & 0xffff);
		m->scratch = 0xa5a50000u | i;
		m->page[m->scratch_off / 4] = m->scratch;
		if (m->page[m->scratch_off / 4] != m->scratch)
			scratch_ok = false;
		m->writes += 3;
		m->reads++;
		if (opt.doorbell_gap_ms)
			usleep(opt.doorbell_gap_ms * 1000);
	}
	cur_label = "main";
	report(m->label, "doorbells",
	       "\"count\":%u,\"last_sq_doorbell\":\"0x%08x\",\"read_back_sq_doorbell\":\"0x%08x\",\"scratch_read_back_ok\":%s",
	       opt.doorbells, m->doorbell, m->page[OFF_SQ_DB / 4], scratch_ok ? "true" : "false");
}

static int add_mapping(const char *label, volatile uint32_t *page, bool writable, const struct context *c)
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
static void claim_scratch(struct mapping *m, unsigned int slot)
{
	cur_label = m->label;
	m->scratch_off = OFF_SCRATCH + 8 * slot;
	m->scratch = 0xc1d00000u | slot;
	m->page[m->scratch_off / 4] = m->scratch;
	m->writes++;
	cur_label = "main";
}

static int cmd_fd = -1;

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
static void watch(const struct device *d, struct context *c, bool auto_start)
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
				err = c && c->fd >= 0 && c->owner == getpid() ? query_device(c->fd, &qd) : -EBADF;
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

/* ---- scenarios ----------------------------------------------------------------------------- */

static volatile uint32_t *map_uars(const struct device *d, struct context *c, unsigned int npages)
{
	void *p;
	struct frame f;

	p = mmap(NULL, (size_t)npages * UAR_PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, c->fd,
		 (off_t)c->resp.uar_mmap_offset);
	if (p == MAP_FAILED) {
		report(NULL, "error", "\"op\":\"mmap\",\"errno\":%d,\"error\":\"%s\"", errno, strerror(errno));
		return NULL;
	}
	frame_of(d, p, &f);	/* before the first touch: not faulted in yet, or already populated */
	report(NULL, "mapped", "\"addr\":\"%p\",\"len\":%zu,\"offset\":\"0x%llx\",\"frame_before_touch\":\"%s\"",
	       p, (size_t)npages * UAR_PAGE, (unsigned long long)c->resp.uar_mmap_offset, f.state);
	return p;
}

static void report_frames(const struct device *d, const char *event)
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

/* Sends the uverbs fd and the context's driver data over a Unix socket (SCM_RIGHTS). */
static int send_context(int sock, const struct context *c)
{
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} u;
	struct iovec iov = { .iov_base = (void *)&c->resp, .iov_len = sizeof(c->resp) };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf) };
	struct cmsghdr *cm;

	memset(&u, 0, sizeof(u));
	cm = CMSG_FIRSTHDR(&msg);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &c->fd, sizeof(int));
	return sendmsg(sock, &msg, 0) == (ssize_t)sizeof(c->resp) ? 0 : -errno;
}

static int recv_context(int sock, struct context *c)
{
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} u;
	struct iovec iov = { .iov_base = &c->resp, .iov_len = sizeof(c->resp) };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf) };
	struct cmsghdr *cm;
	ssize_t n;

	memset(c, 0, sizeof(*c));
	c->fd = c->async_fd = -1;
	n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
	if (n != (ssize_t)sizeof(c->resp))
		return n < 0 ? -errno : -EPROTO;
	cm = CMSG_FIRSTHDR(&msg);
	if (!cm || cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS || cm->cmsg_len != CMSG_LEN(sizeof(int)))
		return -EPROTO;
	memcpy(&c->fd, CMSG_DATA(cm), sizeof(int));
	return 0;
}

static void close_context(struct context *c)
{
	if (c->async_fd >= 0)
		close(c->async_fd);
	if (c->fd >= 0)
		close(c->fd);
	c->fd = c->async_fd = -1;
}

static int report_child_status(pid_t child, int status)
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
static int run_fd_passing(const struct device *d)
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
	report(label, "closed", "");
	return EXIT_OK;
}

/*
 * many: --procs processes (default 32), each with its own context and mapping, plus this
 * process with one context mapped three times (three VMAs on one mmap entry).
 */
static int run_many(const struct device *d)
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
	cur_label = label;
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
		p = mmap(NULL, (size_t)c.resp.num_uars * UAR_PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, c.fd,
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
			munmap(p, (size_t)c.resp.num_uars * UAR_PAGE);
			close_context(&c);
			break;
		case 1:		/* close first: the mapping outlives the fd for a moment */
			close_context(&c);
			((volatile uint32_t *)p)[(OFF_SCRATCH + 8 * (index % 64)) / 4] = 0x7acf0000u | iters;
			munmap(p, (size_t)c.resp.num_uars * UAR_PAGE);
			break;
		default:	/* leave both to exit() on the last round */
			if (iters == budget) {
				report(label, "worker-exit", "\"iterations\":%u,\"maps\":%u,\"context_errors\":%u,\"mmap_errors\":%u,\"last_errno\":%u,\"teardown\":\"exit\"",
				       iters, maps_made, err_ctx, err_map, last_errno);
				_exit(EXIT_OK);
			}
			munmap(p, (size_t)c.resp.num_uars * UAR_PAGE);
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
static int run_race_close(const struct device *d)
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

static int run(const struct device *d)
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
	ret = query_device(c.fd, &qd);
	if (ret)
		report(NULL, "error", "\"op\":\"query-device\",\"errno\":%d", -ret);
	else
		report(NULL, "query-device", "\"vendor_id\":\"0x%x\",\"vendor_part_id\":\"0x%x\",\"max_qp\":%u,\"max_cq\":%u,\"max_pd\":%u,\"phys_port_cnt\":%u",
		       qd.vendor_id, qd.vendor_part_id, qd.max_qp, qd.max_cq, qd.max_pd, qd.phys_port_cnt);
	verbs_setup(c.fd, &verbs);
	if (c.resp.num_uars != npages || c.resp.uar_page_size != UAR_PAGE) {
		report(NULL, "error", "\"op\":\"get-context\",\"error\":\"driver gave %u pages of %u bytes\"",
		       c.resp.num_uars, c.resp.uar_page_size);
		return EXIT_FAIL;
	}

	base = map_uars(d, &c, npages);
	if (!base)
		return EXIT_FAIL;
	if (split) {
		/* Pages 0..3: unmap page 1 and make page 3 read-only, so the one VMA becomes three. */
		volatile uint32_t *p3 = base + 3 * UAR_PAGE / 4;

		add_mapping("page0", base, true, &c);
		add_mapping("page2", base + 2 * UAR_PAGE / 4, true, &c);
		add_mapping("page3-ro", p3, true, &c);
		write_doorbells(&maps[0]);
		write_doorbells(&maps[1]);
		write_doorbells(&maps[2]);	/* while still writable, so it holds data to lose */
		if (munmap((void *)(base + UAR_PAGE / 4), UAR_PAGE) ||
		    mprotect((void *)p3, UAR_PAGE, PROT_READ)) {
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
		report(NULL, "child-exit", "\"child\":%d,\"exited\":%s,\"code\":%d,\"signal\":%d",
		       (int)child, WIFEXITED(status) ? "true" : "false",
		       WIFEXITED(status) ? WEXITSTATUS(status) : -1, WIFSIGNALED(status) ? WTERMSIG(status) : 0);
		if (!WIFEXITED(status) || WEXITSTATUS(status))
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

static void usage(FILE *f)
{
	fprintf(f,
		"usage: vrnic-test [options]\n"
		"  --device PATH        uverbs device (default: the first whose ib device is vrnic*)\n"
		"  --wait-device SEC    wait this long for the uverbs device when the PCI function exists (default 5)\n"
		"  --uars N             UAR pages for the context, 1..8 (default 1; split uses 4)\n"
		"  --scenario NAME      single (default), fork, split, fd-passing, many, race-close\n"
		"  --procs N            processes for many (default 32) and race-close (default 8)\n"
		"  --nops N             NOP WQEs through a user CQ/QP (single, fork; 0 skips; default 4)\n"
		"  --comp-event         then arm the CQ, post one more NOP and wait for its completion event\n"
		"  --doorbells N        doorbell writes in the pattern (default 16)\n"
		"  --doorbell-gap-ms MS pause between doorbell writes (default 20)\n"
		"  --watch SEC          then read/write the mapping for up to SEC s (0: only with --commands)\n"
		"  --interval-ms MS     between probes while watching (default 20)\n"
		"  --settle-ms MS       keep watching this long after the device is gone (default 2000)\n"
		"  --commands PATH      read line commands from PATH ('-' for stdin): watch stop status close-context\n"
		"  --output PATH        write reports to PATH instead of stdout\n"
		"  --pfn-dev PATH       the page-table helper (default /dev/vrnic_pfn)\n"
		"  --canary             only read one word of an address nothing decodes (QEMU logs it) and exit\n"
		"exit: 0 done, 1 failure, 2 usage, 3 no device, 4 SIGBUS/SIGSEGV, 5 child failed\n");
}

static bool parse_uint(const char *s, unsigned int *out, unsigned int lo, unsigned int hi)
{
	char *end;
	unsigned long v = strtoul(s, &end, 0);

	if (!*s || *end || v < lo || v > hi)
		return false;
	*out = v;
	return true;
}

static bool parse_double(const char *s, double *out)
{
	char *end;
	double v = strtod(s, &end);

	if (!*s || *end || v < 0 || v > 1e6)
		return false;
	*out = v;
	return true;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "device", required_argument, 0, 'd' },
		{ "wait-device", required_argument, 0, 'w' },
		{ "uars", required_argument, 0, 'u' },
		{ "scenario", required_argument, 0, 's' },
		{ "doorbells", required_argument, 0, 'b' },
		{ "doorbell-gap-ms", required_argument, 0, 'g' },
		{ "watch", required_argument, 0, 'W' },
		{ "interval-ms", required_argument, 0, 'i' },
		{ "settle-ms", required_argument, 0, 'S' },
		{ "commands", required_argument, 0, 'c' },
		{ "output", required_argument, 0, 'o' },
		{ "pfn-dev", required_argument, 0, 'p' },
		{ "procs", required_argument, 0, 'P' },
		{ "nops", required_argument, 0, 'N' },
		{ "comp-event", no_argument, 0, 'E' },
		{ "canary", no_argument, 0, 'C' },
		{ "help", no_argument, 0, 'h' },
		{ 0, 0, 0, 0 },
	};
	struct sigaction sa;
	struct device d;
	double waited;
	bool canary_only = false;
	int c, ret;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		bool ok = true;

		switch (c) {
		case 'd': opt.device = optarg; break;
		case 'w': ok = parse_double(optarg, &opt.wait_device_s); break;
		case 'u': ok = parse_uint(optarg, &opt.uars, 1, VRNIC_MAX_UARS_PER_CONTEXT); break;
		case 's':
			opt.scenario = optarg;
			ok = !strcmp(optarg, "single") || !strcmp(optarg, "fork") || !strcmp(optarg, "split") ||
			     !strcmp(optarg, "fd-passing") || !strcmp(optarg, "many") || !strcmp(optarg, "race-close");
			break;
		case 'b': ok = parse_uint(optarg, &opt.doorbells, 1, 65535); break;
		case 'g': ok = parse_uint(optarg, &opt.doorbell_gap_ms, 0, 10000); break;
		case 'W': ok = parse_double(optarg, &opt.watch_s); break;
		case 'i': ok = parse_uint(optarg, &opt.interval_ms, 1, 60000); break;
		case 'S': ok = parse_uint(optarg, &opt.settle_ms, 0, 600000); break;
		case 'c': opt.commands = optarg; break;
		case 'o': opt.output = optarg; break;
		case 'p': opt.pfn_dev = optarg; break;
		case 'P': ok = parse_uint(optarg, &opt.procs, 1, 256); break;
		case 'N': ok = parse_uint(optarg, &opt.nops, 0, 64); break;
		case 'E': opt.comp_event = true; break;
		case 'C': canary_only = true; break;
		case 'h': usage(stdout); return EXIT_OK;
		default: usage(stderr); return EXIT_USAGE;
		}
		if (!ok) {
			fprintf(stderr, "vrnic-test: bad value: %s\n", optarg);
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (opt.output) {
		out_fd = open(opt.output, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0644);
		if (out_fd < 0) {
			fprintf(stderr, "vrnic-test: %s: %s\n", opt.output, strerror(errno));
			return EXIT_USAGE;
		}
	}
	if (opt.commands) {
		cmd_fd = !strcmp(opt.commands, "-") ? 0 : open(opt.commands, O_RDONLY | O_CLOEXEC | O_NOCTTY);
		if (cmd_fd < 0) {
			fprintf(stderr, "vrnic-test: %s: %s\n", opt.commands, strerror(errno));
			return EXIT_USAGE;
		}
	}

	if (canary_only)
		return canary();

	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_fault;
	sa.sa_flags = SA_SIGINFO;
	sigaction(SIGBUS, &sa, NULL);
	sigaction(SIGSEGV, &sa, NULL);

	report(NULL, "start", "\"version\":\"" VERSION "\",\"scenario\":\"%s\",\"uars\":%u,\"watch_s\":%.1f",
	       opt.scenario, opt.uars, opt.watch_s);
	for (waited = 0;; waited += 0.1) {
		if (find_device(&d))
			break;
		/* Without a vrnic PCI function nothing will appear: no point waiting. */
		if (waited >= opt.wait_device_s || !pci_device_present()) {
			report_no_device(waited);
			return EXIT_NO_DEVICE;
		}
		usleep(100000);
	}
	read_bar2(&d);
	report(NULL, "device", "\"device\":\"%s\",\"ibdev\":\"%s\",\"bar2\":[\"0x%" PRIx64 "\",\"0x%" PRIx64 "\"]",
	       d.path, d.ibdev, d.bar2_start, d.bar2_end);
	ret = run(&d);
	report(NULL, "exit", "\"code\":%d", ret);
	return ret;
}
