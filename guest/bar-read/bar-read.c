// SPDX-License-Identifier: MIT
/*
 * bar-read: times 4-byte reads of a PCI device's BAR through its sysfs resource file.
 *
 * Why: bench/guest-bar.ts compares how long a trapped BAR read takes from inside a guest
 * (QEMU -> vfio-user -> server -> back) with vrnic and with a C server on libvfio-user. The
 * device needs no driver for this: the sysfs resource file maps the BAR, and writing 1 to the
 * device's sysfs "enable" turns memory decoding on.
 *
 * Usage: bar-read RESOURCE_FILE COUNT
 * Prints one line: "BAR-READ reads=N ns_per_read=X value=0xV" (V: the first read's value).
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int main(int argc, char **argv)
{
	volatile uint32_t *bar;
	uint32_t first, sink = 0;
	uint64_t t0, t1;
	long count, i;
	void *map;
	int fd;

	if (argc != 3) {
		fprintf(stderr, "usage: %s RESOURCE_FILE COUNT\n", argv[0]);
		return 2;
	}
	count = strtol(argv[2], NULL, 10);
	if (count <= 0) {
		fprintf(stderr, "COUNT must be positive\n");
		return 2;
	}
	fd = open(argv[1], O_RDWR | O_SYNC);
	if (fd < 0) {
		perror("open");
		return 1;
	}
	map = mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	bar = map;
	first = bar[0];
	t0 = now_ns();
	for (i = 0; i < count; i++)
		sink += bar[0];
	t1 = now_ns();
	printf("BAR-READ reads=%ld ns_per_read=%llu value=0x%08x sink=%u\n", count,
	       (unsigned long long)((t1 - t0) / (uint64_t)count), first, sink);
	munmap(map, 4096);
	close(fd);
	return 0;
}
