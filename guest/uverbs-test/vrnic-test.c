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
 * guest/README.md lists the events and the command protocol. This unit holds main and the
 * options; the test-*.c units the scenarios, the common units (report, device, uverbs, pfn) what
 * vrnic-pingpong shares.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "report.h"
#include "vrnic-test.h"

struct options opt = {
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
	.procs = 0,
	.nops = 4,
};

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
	if (find_pci_function(NULL, 0))
		report(NULL, "no-device",
		       "\"reason\":\"a vrnic PCI function exists but no uverbs device after %.1f s (driver not bound?)\",\"pci_device_present\":true,\"ib_devices\":[%s],\"exit_code\":%d",
		       waited, ib, EXIT_NO_DEVICE);
	else
		report(NULL, "no-device",
		       "\"reason\":\"no vrnic PCI function (vendor 0x%04x device 0x%04x) and no vrnic uverbs device\",\"pci_device_present\":false,\"ib_devices\":[%s],\"exit_code\":%d",
		       VRNIC_PCI_VENDOR_ID, VRNIC_PCI_DEVICE_ID, ib, EXIT_NO_DEVICE);
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
	struct device d;
	double waited;
	bool canary_only = false;
	int c, ret;

	report_clock_start();
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
		case 'p': pfn_dev = optarg; break;
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
		report_fd = open(opt.output, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0644);
		if (report_fd < 0) {
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

	report_faults(EXIT_SIGNAL);

	report(NULL, "start", "\"version\":\"" VERSION "\",\"scenario\":\"%s\",\"uars\":%u,\"watch_s\":%.1f",
	       opt.scenario, opt.uars, opt.watch_s);
	for (waited = 0;; waited += 0.1) {
		if (find_device(&d, opt.device))
			break;
		/* Without a vrnic PCI function nothing will appear: no point waiting. */
		if (waited >= opt.wait_device_s || !find_pci_function(NULL, 0)) {
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
