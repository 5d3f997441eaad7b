// SPDX-License-Identifier: GPL-2.0
/* pfn.c: asks the vrnic_pfn module which frame an address maps to, and whether that is the UAR BAR. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pfn.h"

const char *pfn_dev = "/dev/vrnic_pfn";

static int pfn_fd = -1;
static pid_t pfn_fd_owner;

void frame_of(const struct device *d, const volatile void *addr, struct frame *f)
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
		pfn_fd = open(pfn_dev, O_RDWR | O_CLOEXEC);
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
		phys = f->pfn * (uint64_t)getpagesize();
		snprintf(f->state, sizeof(f->state), "%s",
			 d->bar2_end && phys >= d->bar2_start && phys <= d->bar2_end ? "bar" : "ram");
	} else if (!strncmp(a, "not-present", 11)) {
		snprintf(f->state, sizeof(f->state), "not-present");
	} else if (!strncmp(a, "no-vma", 6)) {
		snprintf(f->state, sizeof(f->state), "no-vma");
	}
}
