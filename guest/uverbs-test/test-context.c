// SPDX-License-Identifier: GPL-2.0
/* test-context.c: vrnic-test's uverbs context: opening it, closing it, and handing it to another process. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "uverbs.h"
#include "vrnic-test.h"

/* Opens the uverbs device and gets a context of num_uars UAR pages: 0 or a negative errno. */
int get_context(const struct device *d, unsigned int num_uars, struct context *c)
{
	int err;

	c->fd = open(d->path, O_RDWR | O_CLOEXEC);
	if (c->fd < 0)
		return -errno;
	err = uv_get_context(c->fd, num_uars, &c->resp, &c->async_fd);
	if (err) {
		close(c->fd);
		c->fd = -1;
		return err;
	}
	c->owner = getpid();
	return 0;
}

/* Sends the uverbs fd and the context's driver data over a Unix socket (SCM_RIGHTS). */
int send_context(int sock, const struct context *c)
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

int recv_context(int sock, struct context *c)
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

void close_context(struct context *c)
{
	if (c->async_fd >= 0)
		close(c->async_fd);
	if (c->fd >= 0)
		close(c->fd);
	c->fd = c->async_fd = -1;
}
