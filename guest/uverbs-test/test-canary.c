// SPDX-License-Identifier: GPL-2.0
/* test-canary.c: vrnic-test --canary, one read of an address nothing decodes, so QEMU's invalid_mem log must show it. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "report.h"
#include "vrnic-test.h"

/* The flag of a memory resource in a sysfs resource line (the kernel's IORESOURCE_MEM). */
#define IORESOURCE_MEM 0x200

/*
 * Reads one word of an address nothing decodes: the first page of the memory window of the
 * device's upstream bridge that none of the device's BARs covers. The access takes the path a
 * stale BAR mapping takes once QEMU has removed the BARs (through the root port into an empty
 * secondary bus), so QEMU's -d invalid_mem log must show it: proof that the log records such
 * accesses and that the verdict parses its wording. Made through /dev/mem, before any module loads.
 */
int canary(void)
{
	char fn[300], p[PATH_MAX + 16], real[PATH_MAX], *slash;
	uint64_t ws = 0, we = 0, addr, bs[6], be[6], s, e, fl;
	unsigned int i;
	bool moved = true;
	uint64_t pg = (uint64_t)getpagesize();
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
		if (resource_line(p, i, &s, &e, &fl) && (fl & IORESOURCE_MEM) && bs[2] >= s && bs[2] <= e) {
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
			if (be[i] && addr <= be[i] && addr + pg - 1 >= bs[i]) {
				addr = (be[i] + pg) & ~(pg - 1);
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
	page = mmap(NULL, pg, PROT_READ, MAP_SHARED, fd, (off_t)addr);
	close(fd);
	if (page == MAP_FAILED) {
		report(NULL, "canary-error", "\"reason\":\"mmap of /dev/mem at 0x%" PRIx64 ": %s\"", addr, strerror(errno));
		return EXIT_FAIL;
	}
	v = page[0];
	munmap((void *)page, pg);
	report(NULL, "canary", "\"addr\":\"0x%" PRIx64 "\",\"read\":\"0x%08x\",\"window\":[\"0x%" PRIx64 "\",\"0x%" PRIx64 "\"],\"function\":\"%s\"",
	       addr, v, ws, we, fn);
	return EXIT_OK;
}

