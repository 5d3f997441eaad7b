/* SPDX-License-Identifier: GPL-2.0 */
/* pfn.h: which physical frame an address of this process maps to, asked of the vrnic_pfn module. */
#ifndef VRNIC_PFN_H
#define VRNIC_PFN_H

#include <stdint.h>

#include "device.h"

struct frame {
	char state[16];		/* bar (inside the UAR BAR), ram, not-present, no-vma, unknown */
	uint64_t pfn;
};

/* The page-table helper's device node (default /dev/vrnic_pfn). */
extern const char *pfn_dev;

/* What addr maps to now; "unknown" when the helper cannot be asked. */
void frame_of(const struct device *d, const volatile void *addr, struct frame *f);

#endif /* VRNIC_PFN_H */
