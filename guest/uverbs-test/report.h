/* SPDX-License-Identifier: GPL-2.0 */
/* report.h: the `VRNIC-TEST {json}` lines the guest programs write and the host parses. */
#ifndef VRNIC_REPORT_H
#define VRNIC_REPORT_H

#include <stdint.h>

/* Where reports go (stdout unless the program opened its --output). */
extern int report_fd;

/* Starts the clock that every report's t_ms counts from. */
void report_clock_start(void);

/* Milliseconds since report_clock_start(). */
double now_ms(void);

/*
 * One report line: event, time, pid, label ("main" for NULL), then the caller's JSON fields
 * (printf format, no leading comma). One write(2) per line, so lines of several processes
 * sharing the output never mix.
 */
void report(const char *label, const char *event, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/*
 * The label a SIGBUS or SIGSEGV report carries: the mapping being touched when it came. The
 * handler report_faults() installs reports the signal and exits with exit_code.
 */
extern const char *volatile fault_label;
void report_faults(int exit_code);

#endif /* VRNIC_REPORT_H */
