// SPDX-License-Identifier: GPL-2.0
/* device.c: finds the vrnic in sysfs (uverbs device, PCI function, UAR BAR) for the guest programs. */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "device.h"
#include "vrnic-abi.h"

int read_small(const char *path, char *buf, size_t len)
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

bool find_device(struct device *d, const char *only)
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
		if (only ? strcmp(only, d->path) : strncmp(ibdev, "vrnic", 5))
			continue;
		snprintf(d->ibdev, sizeof(d->ibdev), "%s", ibdev);
		found = true;
	}
	closedir(dir);
	return found;
}

bool resource_line(const char *path, unsigned int index, uint64_t *start, uint64_t *end, uint64_t *flags)
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

void read_bar2(struct device *d)
{
	char p[160];

	snprintf(p, sizeof(p), "/sys/class/infiniband/%s/device/resource", d->ibdev);
	/* One line per BAR: the UAR BAR is the third. */
	if (!resource_line(p, 2, &d->bar2_start, &d->bar2_end, NULL))
		d->bar2_start = d->bar2_end = 0;
}

bool device_present(const struct device *d)
{
	char p[160];

	snprintf(p, sizeof(p), "/sys/class/infiniband/%s", d->ibdev);
	return access(p, F_OK) == 0;
}

bool find_pci_function(char *name, size_t len)
{
	DIR *dir = opendir("/sys/bus/pci/devices");
	struct dirent *de;
	char want_v[16], want_dv[16];
	bool found = false;

	snprintf(want_v, sizeof(want_v), "0x%04x", VRNIC_PCI_VENDOR_ID);
	snprintf(want_dv, sizeof(want_dv), "0x%04x", VRNIC_PCI_DEVICE_ID);
	while (dir && !found && (de = readdir(dir))) {
		char p[320], v[16], dv[16];

		snprintf(p, sizeof(p), "/sys/bus/pci/devices/%s/vendor", de->d_name);
		if (read_small(p, v, sizeof(v)))
			continue;
		snprintf(p, sizeof(p), "/sys/bus/pci/devices/%s/device", de->d_name);
		if (read_small(p, dv, sizeof(dv)))
			continue;
		found = !strcmp(v, want_v) && !strcmp(dv, want_dv);
		if (found && name)
			snprintf(name, len, "%s", de->d_name);
	}
	if (dir)
		closedir(dir);
	return found;
}
