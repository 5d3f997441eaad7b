/* SPDX-License-Identifier: GPL-2.0 */
/* vrnic_com.h: what com (registers, admin queue, event queue) offers the rest of the driver. */
#ifndef VRNIC_COM_H
#define VRNIC_COM_H

#include <linux/interrupt.h>
#include <linux/types.h>

#include "vrnic-hw.h"

struct ib_umem;
struct vrnic_dev;

extern unsigned int admin_timeout_ms;

u32 vrnic_read(struct vrnic_dev *dev, u32 off);
void vrnic_write(struct vrnic_dev *dev, u32 off, u32 val);
void vrnic_write64(struct vrnic_dev *dev, u32 lo, u64 val);
bool vrnic_check_gone(struct vrnic_dev *dev);
int vrnic_wait_ready(struct vrnic_dev *dev, bool want);
irqreturn_t vrnic_admin_irq(int irq, void *data);
irqreturn_t vrnic_irq(int irq, void *data);
irqreturn_t vrnic_comp_irq(int irq, void *data);
void vrnic_free_dma_after(struct vrnic_dev *dev, size_t size, void *va, dma_addr_t dma, int ret);
void vrnic_umem_release_after(struct vrnic_dev *dev, struct ib_umem *umem, int ret);
void vrnic_reclaim_parked(struct vrnic_dev *dev);
void vrnic_sync_irqs(struct vrnic_dev *dev);
int vrnic_admin_exec(struct vrnic_dev *dev, struct vrnic_asqe *cmd, struct vrnic_acqe *out);
int vrnic_admin_query(struct vrnic_dev *dev, u8 opcode, u32 port, void *buf, size_t len);
int vrnic_admin_simple(struct vrnic_dev *dev, u8 opcode, u32 dw0, u32 dw1, u32 *result0);
irqreturn_t vrnic_event_thread(int irq, void *data);
void vrnic_free_queues(struct vrnic_dev *dev);
int vrnic_alloc_queues(struct vrnic_dev *dev);
void vrnic_hw_reset(struct vrnic_dev *dev);
int vrnic_hw_enable(struct vrnic_dev *dev);

#endif /* VRNIC_COM_H */
