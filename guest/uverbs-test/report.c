// SPDX-License-Identifier: GPL-2.0
/* report.c: writes the `VRNIC-TEST {json}` report lines, from normal code and from a signal handler. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "report.h"

int report_fd = 1;
const char *volatile fault_label = "main";

static struct timespec t0;
static int fault_exit_code;

void report_clock_start(void)
{
	clock_gettime(CLOCK_MONOTONIC, &t0);
}

double now_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (t.tv_sec - t0.tv_sec) * 1e3 + (t.tv_nsec - t0.tv_nsec) / 1e6;
}

void report(const char *label, const char *event, const char *fmt, ...)
{
	char line[2048];
	int n;

	n = snprintf(line, sizeof(line), "VRNIC-TEST {\"event\":\"%s\",\"t_ms\":%.3f,\"pid\":%d,\"label\":\"%s\"",
		     event, now_ms(), (int)getpid(), label ? label : "main");
	if (fmt && *fmt && n < (int)sizeof(line)) {
		va_list ap;

		line[n++] = ',';
		va_start(ap, fmt);
		n += vsnprintf(line + n, sizeof(line) - n, fmt, ap);
		va_end(ap);
	}
	if (n > (int)sizeof(line) - 3)
		n = sizeof(line) - 3;
	line[n++] = '}';
	line[n++] = '\n';
	/* A report file that fails still leaves the line on the console, where the host reads too. */
	if (write(report_fd, line, n) < 0 && report_fd != 1)
		(void)!write(1, line, n);
}

/* Async-signal-safe formatting for the signal handler: no stdio there. */
static size_t fmt_u64(char *p, uint64_t v, int base)
{
	char tmp[24];
	size_t n = 0, i;

	do {
		tmp[n++] = "0123456789abcdef"[v % base];
		v /= base;
	} while (v);
	for (i = 0; i < n; i++)
		p[i] = tmp[n - 1 - i];
	return n;
}

static size_t fmt_str(char *p, const char *s)
{
	size_t n = strlen(s);

	memcpy(p, s, n);
	return n;
}

static void on_fault(int sig, siginfo_t *si, void *uc)
{
	char line[256];
	size_t n = 0;
	struct timespec t;
	uint64_t ms;

	(void)uc;
	clock_gettime(CLOCK_MONOTONIC, &t);
	ms = (t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000;
	n += fmt_str(line + n, "VRNIC-TEST {\"event\":\"signal\",\"t_ms\":");
	n += fmt_u64(line + n, ms, 10);
	n += fmt_str(line + n, ",\"pid\":");
	n += fmt_u64(line + n, (uint64_t)getpid(), 10);
	n += fmt_str(line + n, ",\"label\":\"");
	n += fmt_str(line + n, fault_label);
	n += fmt_str(line + n, "\",\"signal\":\"");
	n += fmt_str(line + n, sig == SIGBUS ? "SIGBUS" : "SIGSEGV");
	n += fmt_str(line + n, "\",\"si_code\":");
	n += fmt_u64(line + n, (uint64_t)(unsigned int)si->si_code, 10);
	n += fmt_str(line + n, ",\"addr\":\"0x");
	n += fmt_u64(line + n, (uint64_t)(uintptr_t)si->si_addr, 16);
	n += fmt_str(line + n, "\"}\n");
	(void)!write(report_fd, line, n);
	_exit(fault_exit_code);
}

void report_faults(int exit_code)
{
	struct sigaction sa;

	fault_exit_code = exit_code;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_fault;
	sa.sa_flags = SA_SIGINFO;
	sigaction(SIGBUS, &sa, NULL);
	sigaction(SIGSEGV, &sa, NULL);
}
