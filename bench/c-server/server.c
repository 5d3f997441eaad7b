/* A reference vfio-user server in C on libvfio-user, for bench/: BAR0 answers 4-byte reads as vrnic's NIC does. */
/*
 * Why it exists: the trapped-access benchmark needs a floor to compare vrnic's transports
 * against. This server does the least a server can do on libvfio-user: blocking
 * vfu_run_ctx, a BAR0 callback that answers from a small register file. It is built by
 * bench/trapped-access.ts into a temporary directory at bench time and never installed.
 *
 * Usage: vrnic-bench-c-server SOCKET BAR0_SIZE VERSION_VALUE
 * BAR0_SIZE is a power of two (bytes); VERSION_VALUE is what a 4-byte read at offset 0 returns.
 * Reads of other offsets return 0; writes are accepted and ignored. Prints "listening" on
 * stdout once the socket is bound; serves one client after another until SIGTERM/SIGINT.
 */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "libvfio-user.h"

static uint32_t version_value;
static uint64_t bar0_size;
static const char *socket_path;

static ssize_t bar0_access(vfu_ctx_t *ctx, char *buf, size_t count, loff_t offset, bool is_write)
{
    (void)ctx;
    /* libvfio-user has already checked offset + count against the region size. */
    if (is_write)
        return (ssize_t)count;
    memset(buf, 0, count);
    if (offset == 0 && count >= 4)
        memcpy(buf, &version_value, 4);
    return (ssize_t)count;
}

static void on_signal(int sig)
{
    (void)sig;
    /* The context is not torn down from a signal handler; only the socket file is. */
    unlink(socket_path);
    _exit(0);
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s SOCKET BAR0_SIZE VERSION_VALUE\n", argv[0]);
        return 2;
    }
    socket_path = argv[1];
    bar0_size = strtoull(argv[2], NULL, 0);
    version_value = (uint32_t)strtoul(argv[3], NULL, 0);
    if (bar0_size < 4096 || (bar0_size & (bar0_size - 1)) != 0) {
        fprintf(stderr, "BAR0_SIZE must be a power of two >= 4096\n");
        return 2;
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    vfu_ctx_t *ctx = vfu_create_ctx(VFU_TRANS_SOCK, socket_path, 0, NULL, VFU_DEV_TYPE_PCI);
    if (ctx == NULL) {
        perror("vfu_create_ctx");
        return 1;
    }
    if (vfu_pci_init(ctx, VFU_PCI_TYPE_EXPRESS, PCI_HEADER_TYPE_NORMAL, 0) < 0) {
        perror("vfu_pci_init");
        return 1;
    }
    vfu_pci_set_id(ctx, 0x1de5, 0x0001, 0x1de5, 0x0001);
    vfu_pci_set_class(ctx, 0x02, 0x07, 0x00);
    if (vfu_setup_region(ctx, VFU_PCI_DEV_BAR0_REGION_IDX, bar0_size, bar0_access,
                         VFU_REGION_FLAG_RW | VFU_REGION_FLAG_MEM, NULL, 0, -1, 0) < 0) {
        perror("vfu_setup_region");
        return 1;
    }
    if (vfu_realize_ctx(ctx) < 0) {
        perror("vfu_realize_ctx");
        return 1;
    }
    printf("listening\n");
    fflush(stdout);

    int failed_attaches = 0;
    for (;;) {
        if (vfu_attach_ctx(ctx) < 0) {
            /* A client that connects and leaves without negotiating (a readiness probe) fails
             * the attach; the next client is still served. Only a persistent failure is fatal. */
            if (errno != EINTR && ++failed_attaches > 1000) {
                perror("vfu_attach_ctx");
                return 1;
            }
            continue;
        }
        failed_attaches = 0;
        for (;;) {
            int n = vfu_run_ctx(ctx);
            if (n >= 0 || errno == EINTR)
                continue;
            if (errno == ENOTCONN)
                break; /* the client went away: accept the next one */
            perror("vfu_run_ctx");
            return 1;
        }
    }
}
