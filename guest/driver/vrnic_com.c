// SPDX-License-Identifier: GPL-2.0
/* vrnic_com.c: register access, the admin queue and the event queue of the vrnic device. */
#include <linux/delay.h>
#include <linux/dma-mapping.h>
#include <linux/interrupt.h>
#include <linux/io.h>
#include <linux/jiffies.h>
#include <linux/slab.h>
#include <rdma/ib_umem.h>

#include "vrnic.h"
#include "vrnic_com.h"

/* ---- registers ---------------------------------------------------------------------------- */

/* A read that also notices the device leaving: all-ones is what a vanished PCIe device returns. */
u32 vrnic_read(struct vrnic_dev *dev, u32 off)
{
	u32 v;

	if (READ_ONCE(dev->gone))
		return VRNIC_REG_GONE;
	/*
	 * The PCI core knows first when it found out itself: pciehp marks a surprise-removed
	 * function disconnected before calling remove, AER/DPC take the channel offline. No access
	 * at all then.
	 */
	if (pci_dev_is_disconnected(dev->pdev) || pci_channel_offline(dev->pdev)) {
		WRITE_ONCE(dev->gone, true);
		return VRNIC_REG_GONE;
	}
	v = readl(dev->regs + off);
	if (v == VRNIC_REG_GONE && !READ_ONCE(dev->gone)) {
		WRITE_ONCE(dev->gone, true);
		dev_warn(&dev->pdev->dev,
			 "register 0x%03x reads all-ones: device gone, no more commands\n", off);
	}
	return v;
}

void vrnic_write(struct vrnic_dev *dev, u32 off, u32 val)
{
	if (READ_ONCE(dev->gone))
		return;
	writel(val, dev->regs + off);
}

void vrnic_write64(struct vrnic_dev *dev, u32 lo, u64 val)
{
	vrnic_write(dev, lo, lower_32_bits(val));
	vrnic_write(dev, lo + 4, upper_32_bits(val));
}

bool vrnic_check_gone(struct vrnic_dev *dev)
{
	vrnic_read(dev, VRNIC_REG_STATUS);
	return READ_ONCE(dev->gone);
}

/* Waits (bounded) until STATUS.READY equals want; fails at once on FATAL or a vanished device. */
int vrnic_wait_ready(struct vrnic_dev *dev, bool want)
{
	unsigned long deadline = jiffies + msecs_to_jiffies(VRNIC_READY_TIMEOUT_MS);
	u32 st;

	for (;;) {
		st = vrnic_read(dev, VRNIC_REG_STATUS);
		if (st == VRNIC_REG_GONE)
			return -ENODEV;
		if (want && (st & VRNIC_STATUS_FATAL)) {
			dev_err(&dev->pdev->dev, "device fatal, code %u\n",
				vrnic_read(dev, VRNIC_REG_FATAL_CODE));
			return -EIO;
		}
		if (!!(st & VRNIC_STATUS_READY) == want)
			return 0;
		if (time_after(jiffies, deadline))
			return -ETIMEDOUT;
		usleep_range(500, 1000);
	}
}

/* ---- admin queue --------------------------------------------------------------------------- */

/* Consumes every completion the device has posted; caller holds acq_lock. */
static void vrnic_acq_drain_locked(struct vrnic_dev *dev)
{
	u32 consumed = 0;

	for (;;) {
		struct vrnic_acqe *e = &dev->acq[dev->acq_head % VRNIC_ACQ_ENTRIES];
		struct vrnic_acqe c;

		if ((le16_to_cpu(READ_ONCE(e->flags)) & VRNIC_CQE_PHASE) != dev->acq_phase)
			break;
		dma_rmb();
		c = *e;
		dev->acq_head++;
		consumed++;
		if (dev->acq_head % VRNIC_ACQ_ENTRIES == 0)
			dev->acq_phase ^= 1;
		if (dev->pending_cmd_id && le32_to_cpu(c.cmd_id) == dev->pending_cmd_id) {
			dev->result = c;
			dev->have_result = true;
			dev->pending_cmd_id = 0;
			complete(&dev->admin_done);
		} else {
			dev_warn_ratelimited(&dev->pdev->dev, "stale admin completion for command %u\n",
					     le32_to_cpu(c.cmd_id));
		}
	}
	if (consumed)
		vrnic_write(dev, VRNIC_REG_ACQ_HEAD, dev->acq_head);
}

irqreturn_t vrnic_admin_irq(int irq, void *data)
{
	struct vrnic_dev *dev = data;
	unsigned long flags;

	spin_lock_irqsave(&dev->acq_lock, flags);
	vrnic_acq_drain_locked(dev);
	spin_unlock_irqrestore(&dev->acq_lock, flags);
	return IRQ_HANDLED;
}

/*
 * With one vector (MSI without interrupt remapping, or INTx) every source shares it: INT_CAUSE
 * says which ones fired. Acknowledging before handling means a source that fires again
 * meanwhile raises a new interrupt. Completion vectors need nothing here: user CQs are polled by
 * user space. On a shared INTx line a zero cause is another device's interrupt.
 */
irqreturn_t vrnic_irq(int irq, void *data)
{
	struct vrnic_dev *dev = data;
	unsigned long flags;
	u32 cause;

	cause = vrnic_read(dev, VRNIC_REG_INT_CAUSE);
	if (!cause || cause == VRNIC_REG_GONE)
		return IRQ_NONE;
	vrnic_write(dev, VRNIC_REG_INT_CAUSE, cause);
	if (cause & VRNIC_INT_ADMIN) {
		spin_lock_irqsave(&dev->acq_lock, flags);
		vrnic_acq_drain_locked(dev);
		spin_unlock_irqrestore(&dev->acq_lock, flags);
	}
	if (cause & VRNIC_INT_COMPLETION)
		vrnic_comp_vector(dev, U32_MAX);
	return cause & VRNIC_INT_EVENT ? IRQ_WAKE_THREAD : IRQ_HANDLED;
}

/* One completion vector of its own (MSI-X): only the CQs created on it can have completed. */
irqreturn_t vrnic_comp_irq(int irq, void *data)
{
	struct vrnic_comp_vec *vec = data;

	vrnic_comp_vector(vec->dev, vec->index);
	return IRQ_HANDLED;
}

static int vrnic_status_to_errno(u16 status)
{
	switch (status) {
	case VRNIC_STATUS_OK:
		return 0;
	case VRNIC_STATUS_BAD_OPCODE:
		return -EOPNOTSUPP;
	case VRNIC_STATUS_BAD_PARAM:
		return -EINVAL;
	case VRNIC_STATUS_BAD_ADDRESS:
		return -EFAULT;
	case VRNIC_STATUS_NO_RESOURCES:
		return -ENOMEM;
	case VRNIC_STATUS_BAD_HANDLE:
		return -ENOENT;
	case VRNIC_STATUS_IN_USE:
		return -EBUSY;
	case VRNIC_STATUS_BAD_STATE:
		return -EINVAL;
	default:
		return -EIO;
	}
}

/*
 * A command the device never completed may still be running: it may yet write the buffers it
 * names (a query's output, a ring it was told to forget). The only way to be sure it will not is
 * to reset the device (docs/device.md 3.1: a command in flight is abandoned, nothing more is
 * written for it) and read back that the reset took. The device is then unusable until the
 * driver is rebound; re-creating every user object behind the users' backs is not this
 * driver's job. Caller holds admin_lock.
 */
static void vrnic_admin_break(struct vrnic_dev *dev)
{
	int ret;

	dev->admin_broken = true;
	vrnic_write(dev, VRNIC_REG_CTRL, VRNIC_CTRL_RESET);
	ret = vrnic_wait_ready(dev, false);
	if (!ret || ret == -ENODEV) {
		WRITE_ONCE(dev->dma_stopped, true);
		dev_err(&dev->pdev->dev, "device reset after the timeout; it takes no more commands\n");
	} else {
		dev_err(&dev->pdev->dev, "device did not confirm its reset: memory it held stays allocated\n");
	}
}

/*
 * Frees a coherent buffer the device was told to write, unless the command's outcome leaves the
 * device able to write it still (a timeout without a confirmed reset): then the buffer is parked
 * until vrnic_reclaim_parked.
 */
void vrnic_free_dma_after(struct vrnic_dev *dev, size_t size, void *va, dma_addr_t dma, int ret)
{
	struct vrnic_parked *p;
	unsigned long flags;

	if ((ret != -ETIMEDOUT && ret != -EIO) || READ_ONCE(dev->dma_stopped)) {
		/* After a timeout, say what went back: a test matches it to the device writes. */
		if (ret == -ETIMEDOUT || ret == -EIO)
			dev_info(&dev->pdev->dev,
				 "freeing %zu DMA bytes at %pad: the device can no longer write them\n",
				 size, &dma);
		dma_free_coherent(&dev->pdev->dev, size, va, dma);
		return;
	}
	/* Without a record it cannot be freed safely later: then leaking it is the safe choice. */
	p = kzalloc(sizeof(*p), GFP_KERNEL);
	if (!p)
		return;
	p->va = va;
	p->dma = dma;
	p->size = size;
	spin_lock_irqsave(&dev->parked_lock, flags);
	list_add_tail(&p->list, &dev->parked);
	spin_unlock_irqrestore(&dev->parked_lock, flags);
	dev_info(&dev->pdev->dev, "parked %zu DMA bytes at %pad until the device cannot write them\n",
		 size, &dma);
}

/*
 * Unpins a user ring or MR after its DESTROY. A device that refused the DESTROY, or never
 * answered it, may still write the pages: then they stay pinned (parked) until
 * vrnic_reclaim_parked, or the device would write into pages the process has reused.
 * -ENODEV means the device is gone or confirmed a reset: it writes nothing any more.
 */
void vrnic_umem_release_after(struct vrnic_dev *dev, struct ib_umem *umem, int ret)
{
	struct vrnic_parked *p;
	unsigned long flags;

	if (!umem)
		return;
	if (!ret || ret == -ENODEV || READ_ONCE(dev->dma_stopped)) {
		ib_umem_release(umem);
		return;
	}
	p = kzalloc(sizeof(*p), GFP_KERNEL);
	if (!p)
		return;
	p->umem = umem;
	spin_lock_irqsave(&dev->parked_lock, flags);
	list_add_tail(&p->list, &dev->parked);
	spin_unlock_irqrestore(&dev->parked_lock, flags);
	dev_info(&dev->pdev->dev, "parked a pinned range of %zu bytes until the device cannot write it\n",
		 umem->length);
}

/* Waits until no interrupt handler or event thread of this device is running. */
void vrnic_sync_irqs(struct vrnic_dev *dev)
{
	u32 i;

	for (i = 0; i < dev->num_vectors; i++)
		synchronize_irq(pci_irq_vector(dev->pdev, i));
}

/* Frees everything parked; only once the device can no longer write (reset, bus master off). */
void vrnic_reclaim_parked(struct vrnic_dev *dev)
{
	struct vrnic_parked *p, *tmp;
	unsigned long flags;
	LIST_HEAD(list);

	spin_lock_irqsave(&dev->parked_lock, flags);
	list_splice_init(&dev->parked, &list);
	spin_unlock_irqrestore(&dev->parked_lock, flags);
	list_for_each_entry_safe(p, tmp, &list, list) {
		if (p->va) {
			dev_info(&dev->pdev->dev, "freeing parked DMA bytes at %pad\n", &p->dma);
			dma_free_coherent(&dev->pdev->dev, p->size, p->va, p->dma);
		}
		ib_umem_release(p->umem);
		kfree(p);
	}
}

/*
 * Runs one admin command and waits for its completion: by vector 0 when we have it, polling the
 * ACQ in between either way, so a lost interrupt costs a few ms and a dead device costs nothing
 * more than one register read. Never waits past admin_timeout_ms.
 */
int vrnic_admin_exec(struct vrnic_dev *dev, struct vrnic_asqe *cmd, struct vrnic_acqe *out)
{
	unsigned long deadline, flags;
	unsigned long step = msecs_to_jiffies(dev->num_vectors ? 20 : 1) ?: 1;
	unsigned int timeout_ms = READ_ONCE(admin_timeout_ms);
	bool broke = false;
	u32 cmd_id;
	int ret;

	mutex_lock(&dev->admin_lock);
	/*
	 * -ENODEV says "the device cannot write memory any more": callers then free what it held.
	 * A device reset after a timeout that never confirmed the reset may still write: -EIO.
	 */
	if (dev->admin_broken) {
		ret = READ_ONCE(dev->dma_stopped) ? -ENODEV : -EIO;
		goto out;
	}
	if (vrnic_check_gone(dev)) {
		ret = -ENODEV;
		goto out;
	}
	cmd_id = ++dev->next_cmd_id;
	if (!cmd_id)
		cmd_id = ++dev->next_cmd_id;
	cmd->cmd_id = cpu_to_le32(cmd_id);

	spin_lock_irqsave(&dev->acq_lock, flags);
	dev->pending_cmd_id = cmd_id;
	dev->have_result = false;
	reinit_completion(&dev->admin_done);
	spin_unlock_irqrestore(&dev->acq_lock, flags);

	memcpy(&dev->asq[dev->asq_tail % VRNIC_ASQ_ENTRIES], cmd, sizeof(*cmd));
	dma_wmb();
	dev->asq_tail++;
	vrnic_write(dev, VRNIC_REG_ASQ_TAIL, dev->asq_tail);

	deadline = jiffies + msecs_to_jiffies(timeout_ms);
	for (;;) {
		bool done;

		wait_for_completion_timeout(&dev->admin_done, step);
		spin_lock_irqsave(&dev->acq_lock, flags);
		vrnic_acq_drain_locked(dev);
		done = dev->have_result;
		if (done && out)
			*out = dev->result;
		if (!done && (READ_ONCE(dev->gone) || time_after(jiffies, deadline)))
			dev->pending_cmd_id = 0;
		spin_unlock_irqrestore(&dev->acq_lock, flags);
		if (done) {
			u16 status = le16_to_cpu(dev->result.status);

			ret = vrnic_status_to_errno(status);
			if (ret)
				dev_dbg(&dev->pdev->dev, "admin opcode 0x%02x: status %u\n",
					cmd->opcode, status);
			break;
		}
		if (vrnic_check_gone(dev)) {
			ret = -ENODEV;
			break;
		}
		if (time_after(jiffies, deadline)) {
			dev_err(&dev->pdev->dev, "admin opcode 0x%02x (command %u) timed out after %u ms\n",
				cmd->opcode, cmd_id, timeout_ms);
			vrnic_admin_break(dev);
			broke = true;
			ret = -ETIMEDOUT;
			break;
		}
	}
out:
	mutex_unlock(&dev->admin_lock);
	/* Every object the users hold went with the reset: tell them, as a fatal device error. */
	if (broke && READ_ONCE(dev->registered)) {
		struct ib_event ev = { .device = &dev->ibdev, .event = IB_EVENT_DEVICE_FATAL };

		ib_dispatch_event(&ev);
	}
	return ret;
}

/* QUERY_DEVICE / QUERY_PORT: the device writes its answer into a DMA buffer we hand it. */
int vrnic_admin_query(struct vrnic_dev *dev, u8 opcode, u32 port, void *buf, size_t len)
{
	struct vrnic_asqe cmd = { .opcode = opcode };
	dma_addr_t dma;
	void *va;
	int ret;

	va = dma_alloc_coherent(&dev->pdev->dev, PAGE_SIZE, &dma, GFP_KERNEL);
	if (!va)
		return -ENOMEM;
	cmd.query.addr = cpu_to_le64(dma);
	cmd.query.len = cpu_to_le32(len);
	if (opcode == VRNIC_ADMIN_QUERY_PORT)
		cmd.query.port = cpu_to_le32(port);
	ret = vrnic_admin_exec(dev, &cmd, NULL);
	if (!ret)
		memcpy(buf, va, len);
	vrnic_free_dma_after(dev, PAGE_SIZE, va, dma, ret);
	return ret;
}

int vrnic_admin_simple(struct vrnic_dev *dev, u8 opcode, u32 dw0, u32 dw1, u32 *result0)
{
	struct vrnic_asqe cmd = { .opcode = opcode };
	struct vrnic_acqe cqe;
	int ret;

	cmd.dw[0] = cpu_to_le32(dw0);
	cmd.dw[1] = cpu_to_le32(dw1);
	ret = vrnic_admin_exec(dev, &cmd, &cqe);
	if (!ret && result0)
		*result0 = le32_to_cpu(cqe.result0);
	return ret;
}

/* ---- event queue --------------------------------------------------------------------------- */

/*
 * CQ and QP events go to the object's own handler (the core's ib_dispatch_event is for device
 * and port events). The object cannot be freed meanwhile: destroy erases it from the table and
 * then waits for this thread with synchronize_irq before the core frees it.
 */
static void vrnic_cq_event(struct vrnic_dev *dev, u32 cqn)
{
	struct ib_event ev = { .device = &dev->ibdev, .event = IB_EVENT_CQ_ERR };
	struct vrnic_cq *cq = xa_load(&dev->cqs, cqn);

	if (!cq) {
		dev_warn_ratelimited(&dev->pdev->dev, "CQ_ERROR for unknown CQ %u\n", cqn);
		return;
	}
	ev.element.cq = &cq->ibcq;
	if (cq->ibcq.event_handler)
		cq->ibcq.event_handler(&ev, cq->ibcq.cq_context);
}

static void vrnic_qp_event(struct vrnic_dev *dev, u32 qpn)
{
	struct ib_event ev = { .device = &dev->ibdev, .event = IB_EVENT_QP_FATAL };
	struct vrnic_qp *qp = xa_load(&dev->qps, qpn);

	if (!qp) {
		dev_warn_ratelimited(&dev->pdev->dev, "QP_FATAL for unknown QP %u\n", qpn);
		return;
	}
	/* The device put the QP in ERR; query_qp must say so. */
	WRITE_ONCE(qp->state, IB_QPS_ERR);
	ev.element.qp = &qp->ibqp;
	if (qp->ibqp.event_handler)
		qp->ibqp.event_handler(&ev, qp->ibqp.qp_context);
}

irqreturn_t vrnic_event_thread(int irq, void *data)
{
	struct vrnic_dev *dev = data;
	u32 consumed = 0;

	for (;;) {
		struct vrnic_eqe *e = &dev->eq[dev->eq_head % VRNIC_EQ_ENTRIES];
		struct ib_event ev = { .device = &dev->ibdev };
		u16 type;
		u32 d0, d1;

		if ((le16_to_cpu(READ_ONCE(e->flags)) & VRNIC_CQE_PHASE) != dev->eq_phase)
			break;
		dma_rmb();
		type = le16_to_cpu(e->type);
		d0 = le32_to_cpu(e->data0);
		d1 = le32_to_cpu(e->data1);
		dev->eq_head++;
		consumed++;
		if (dev->eq_head % VRNIC_EQ_ENTRIES == 0)
			dev->eq_phase ^= 1;
		dev_info(&dev->pdev->dev, "event type %u data 0x%x 0x%x\n", type, d0, d1);
		if (!READ_ONCE(dev->registered))
			continue;
		switch (type) {
		case VRNIC_EVENT_PORT_STATE_CHANGE:
			ev.event = d1 == IB_PORT_ACTIVE ? IB_EVENT_PORT_ACTIVE : IB_EVENT_PORT_ERR;
			ev.element.port_num = 1;
			ib_dispatch_event(&ev);
			break;
		case VRNIC_EVENT_FATAL_ERROR:
			ev.event = IB_EVENT_DEVICE_FATAL;
			ib_dispatch_event(&ev);
			break;
		case VRNIC_EVENT_CQ_ERROR:
			vrnic_cq_event(dev, d0);
			break;
		case VRNIC_EVENT_QP_FATAL:
			vrnic_qp_event(dev, d0);
			break;
		default:
			break;
		}
	}
	if (consumed)
		vrnic_write(dev, VRNIC_REG_EQ_HEAD, dev->eq_head);
	return IRQ_HANDLED;
}

void vrnic_free_queues(struct vrnic_dev *dev)
{
	struct device *d = &dev->pdev->dev;

	if (dev->asq)
		dma_free_coherent(d, VRNIC_ASQ_ENTRIES * sizeof(*dev->asq), dev->asq, dev->asq_dma);
	if (dev->acq)
		dma_free_coherent(d, VRNIC_ACQ_ENTRIES * sizeof(*dev->acq), dev->acq, dev->acq_dma);
	if (dev->eq)
		dma_free_coherent(d, VRNIC_EQ_ENTRIES * sizeof(*dev->eq), dev->eq, dev->eq_dma);
	dev->asq = NULL;
	dev->acq = NULL;
	dev->eq = NULL;
}

int vrnic_alloc_queues(struct vrnic_dev *dev)
{
	struct device *d = &dev->pdev->dev;

	dev->asq = dma_alloc_coherent(d, VRNIC_ASQ_ENTRIES * sizeof(*dev->asq), &dev->asq_dma,
				      GFP_KERNEL);
	dev->acq = dma_alloc_coherent(d, VRNIC_ACQ_ENTRIES * sizeof(*dev->acq), &dev->acq_dma,
				      GFP_KERNEL);
	dev->eq = dma_alloc_coherent(d, VRNIC_EQ_ENTRIES * sizeof(*dev->eq), &dev->eq_dma,
				     GFP_KERNEL);
	if (!dev->asq || !dev->acq || !dev->eq) {
		vrnic_free_queues(dev);
		return -ENOMEM;
	}
	dev->asq_tail = 0;
	dev->acq_head = 0;
	dev->acq_phase = 1;
	dev->eq_head = 0;
	dev->eq_phase = 1;
	return 0;
}

/* Puts the device back to its power-on state; skipped when it has gone (nothing to reset). */
void vrnic_hw_reset(struct vrnic_dev *dev)
{
	if (vrnic_check_gone(dev))
		return;
	vrnic_write(dev, VRNIC_REG_CTRL, VRNIC_CTRL_RESET);
	if (vrnic_wait_ready(dev, false) == -ETIMEDOUT)
		dev_warn(&dev->pdev->dev, "device still ready %d ms after reset\n",
			 VRNIC_READY_TIMEOUT_MS);
}

int vrnic_hw_enable(struct vrnic_dev *dev)
{
	vrnic_write64(dev, VRNIC_REG_ASQ_BASE_LO, dev->asq_dma);
	vrnic_write(dev, VRNIC_REG_ASQ_SIZE, VRNIC_ASQ_ENTRIES);
	vrnic_write64(dev, VRNIC_REG_ACQ_BASE_LO, dev->acq_dma);
	vrnic_write(dev, VRNIC_REG_ACQ_SIZE, VRNIC_ACQ_ENTRIES);
	vrnic_write64(dev, VRNIC_REG_EQ_BASE_LO, dev->eq_dma);
	vrnic_write(dev, VRNIC_REG_EQ_SIZE, VRNIC_EQ_ENTRIES);
	vrnic_write(dev, VRNIC_REG_CTRL, VRNIC_CTRL_ENABLE);
	return vrnic_wait_ready(dev, true);
}
