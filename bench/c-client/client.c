/* A vfio-user client in C for bench/: times 4-byte BAR0 REGION_READs against any server, driven over stdin. */
/*
 * Why it exists: a client in Node adds its own FFI calls and wake-ups to every round trip, the
 * same for every server, which pulls every ratio towards 1. This client's share is one write(2)
 * and one read(2) per access, as a QEMU vCPU thread's would be. bench/trapped-access.ts builds it
 * at bench time into a temporary directory, runs one per server, and has each time its rounds in
 * turn, so drift on a shared machine lands on every server alike.
 *
 * Usage: vrnic-bench-c-client SOCKET
 * Connects, negotiates VERSION, turns memory decoding on (a PCI device answers BAR accesses only
 * then), prints "ready 0xVALUE" (the 4 bytes at BAR0 offset 0), then for each line "N" on stdin
 * does N reads and prints "ns-per-read". A failure prints "error: ..." and exits 1.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define HEADER_SIZE 16
#define CMD_VERSION 1
#define CMD_REGION_READ 9
#define CMD_REGION_WRITE 10
#define FLAG_REPLY 0x1
#define FLAG_ERROR 0x20
#define BAR0_REGION 0
#define CONFIG_REGION 7
#define PCI_COMMAND 0x04
#define PCI_COMMAND_MEMORY 0x2
/* A server that stops answering must fail the benchmark, not hang it. */
#define REPLY_TIMEOUT_S 10

static int fd = -1;
static uint16_t msg_id;
static unsigned char reply[4096];

static void die(const char *what)
{
	printf("error: %s: %s\n", what, errno ? strerror(errno) : "protocol");
	fflush(stdout);
	exit(1);
}

static void put16(unsigned char *p, uint16_t v) { memcpy(p, &v, 2); }
static void put32(unsigned char *p, uint32_t v) { memcpy(p, &v, 4); }
static void put64(unsigned char *p, uint64_t v) { memcpy(p, &v, 8); }
static uint32_t get32(const unsigned char *p) { uint32_t v; memcpy(&v, p, 4); return v; }

static void header(unsigned char *msg, uint16_t cmd, uint32_t size)
{
	memset(msg, 0, HEADER_SIZE);
	put16(msg, msg_id++);
	put16(msg + 2, cmd);
	put32(msg + 4, size);
}

static void send_all(const unsigned char *buf, size_t len)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = write(fd, buf + done, len - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			die("write");
		done += (size_t)n;
	}
}

/* Reads one whole reply into reply[]; returns its size. */
static size_t read_reply(void)
{
	size_t have = 0, want = HEADER_SIZE;

	while (have < want) {
		ssize_t n = read(fd, reply + have, sizeof(reply) - have);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			die(errno == EAGAIN ? "no reply in time" : "read");
		if (n == 0) {
			errno = 0;
			die("server closed the connection");
		}
		have += (size_t)n;
		if (have >= HEADER_SIZE) {
			want = get32(reply + 4);
			errno = 0;
			if (want < HEADER_SIZE || want > sizeof(reply))
				die("reply size");
		}
	}
	errno = 0;
	if (!(get32(reply + 8) & FLAG_REPLY))
		die("expected a reply");
	if (get32(reply + 8) & FLAG_ERROR)
		die("server replied with an error");
	return want;
}

static void negotiate(void)
{
	static const char json[] = "{\"capabilities\":{\"max_msg_fds\":8,\"max_data_xfer_size\":1048576}}";
	unsigned char msg[HEADER_SIZE + 4 + sizeof(json)];

	header(msg, CMD_VERSION, sizeof(msg));
	put16(msg + 16, 0);
	put16(msg + 18, 2);
	memcpy(msg + 20, json, sizeof(json));
	send_all(msg, sizeof(msg));
	read_reply();
}

static void write16(uint32_t region, uint64_t offset, uint16_t value)
{
	unsigned char msg[HEADER_SIZE + 16 + 2];

	header(msg, CMD_REGION_WRITE, sizeof(msg));
	put64(msg + 16, offset);
	put32(msg + 24, region);
	put32(msg + 28, 2);
	put16(msg + 32, value);
	send_all(msg, sizeof(msg));
	read_reply();
}

static uint32_t read32(uint32_t region, uint64_t offset)
{
	unsigned char msg[HEADER_SIZE + 16];

	header(msg, CMD_REGION_READ, sizeof(msg));
	put64(msg + 16, offset);
	put32(msg + 24, region);
	put32(msg + 28, 4);
	send_all(msg, sizeof(msg));
	errno = 0;
	if (read_reply() != HEADER_SIZE + 16 + 4)
		die("REGION_READ reply size");
	return get32(reply + HEADER_SIZE + 16);
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int main(int argc, char **argv)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	struct timeval tv = { .tv_sec = REPLY_TIMEOUT_S };
	char line[64];

	if (argc != 2 || strlen(argv[1]) >= sizeof(addr.sun_path)) {
		fprintf(stderr, "usage: %s SOCKET\n", argv[0]);
		return 2;
	}
	strcpy(addr.sun_path, argv[1]);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		die("socket");
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0)
		die("connect");
	negotiate();
	write16(CONFIG_REGION, PCI_COMMAND, PCI_COMMAND_MEMORY);
	printf("ready 0x%08x\n", read32(BAR0_REGION, 0));
	fflush(stdout);
	while (fgets(line, sizeof(line), stdin)) {
		long n = strtol(line, NULL, 10);
		uint64_t t0;

		if (n <= 0)
			break;
		t0 = now_ns();
		for (long i = 0; i < n; i++)
			read32(BAR0_REGION, 0);
		printf("%.1f\n", (double)(now_ns() - t0) / (double)n);
		fflush(stdout);
	}
	close(fd);
	return 0;
}
