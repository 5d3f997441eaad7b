/* SPDX-License-Identifier: GPL-2.0 */
/* device.h: finding the vrnic in sysfs: its uverbs device, its PCI function and its UAR BAR. */
#ifndef VRNIC_DEVICE_H
#define VRNIC_DEVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct device {
	char path[300];		/* /dev/infiniband/uverbsN */
	char ibdev[64];		/* vrnic0 */
	uint64_t bar2_start, bar2_end;	/* physical range of the UAR BAR (inclusive end), or 0 */
};

/* Reads a small sysfs file into buf without its trailing newline and blanks; 0 or -1. */
int read_small(const char *path, char *buf, size_t len);

/* The first uverbs device whose ib device is a vrnic, or the one at `only` when not NULL. */
bool find_device(struct device *d, const char *only);

/* Line `index` of a sysfs resource file: start, end (inclusive), flags; false when absent or empty. */
bool resource_line(const char *path, unsigned int index, uint64_t *start, uint64_t *end, uint64_t *flags);

/* Fills in d->bar2_start and d->bar2_end from the PCI function's resource file (0 when unknown). */
void read_bar2(struct device *d);

/* Whether the ib device is still registered: false once the removal has unregistered it. */
bool device_present(const struct device *d);

/*
 * Whether the PCI bus has a vrnic function, and its sysfs name (bus address) when name is not
 * NULL: then a missing uverbs device is worth waiting for.
 */
bool find_pci_function(char *name, size_t len);

#endif /* VRNIC_DEVICE_H */
