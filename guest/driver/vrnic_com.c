// SPDX-License-Identifier: GPL-2.0
/* vrnic_com.c: register access, the admin queue and the event queue of the vrnic device. */
#include <linux/delay.h>
#include <linux/dma-mapping.h>
#include <linux/interrupt.h>
#include <linux/io.h>
#include <linux/jiffies.h>

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
	 * The PCI core knows first when it found out itself: pciehp marks a surprise-removed function
	 * disconnected before calling remove, AER/DPC take the channel offline. No access at all then.
	 */
	if (pci_dev_is_disconnected(dev->pdev) || pci_channel_offline(dev->pdev)) {
		WRITE_ONCE(dev->gone, true);
		return VRNIC_REG_GONE;
	}
	v = readl(dev->regs + off);
	if (v == VRNIC_REG_GONE && !READ_ONCE(dev->gone)) {
		WRITE_ONCE(dev->gone, true);
		dev_warn(&dev->pdev->dev, "register 0x%03x reads all-ones: device gone, no more commands\n", off);
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
	return cause & VRNIC_INT_EVENT ? IRQ_WAKE_THREAD : IRQ_HANDLED;
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
 * Runs one admin command and waits for its completion: by vector 0 when we have it, polling the
 * ACQ in between either way, so a lost interrupt costs a few ms and a dead device costs nothing
 * more than one register read. Never waits past admin_timeout_ms.
 */
int vrnic_admin_exec(struct vrnic_dev *dev, struct vrnic_asqe *cmd, struct vrnic_acqe *out)
{
	unsigned long deadline, flags;
	unsigned long step = msecs_to_jiffies(dev->num_vectors ? 20 : 1) ?: 1;
	u32 cmd_id;
	int ret;

	mutex_lock(&dev->admin_lock);
	if (dev->admin_broken || vrnic_check_gone(dev)) {
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

	deadline = jiffies + msecs_to_jiffies(admin_timeout_ms);
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
				dev_dbg(&dev->pdev->dev, "admin opcode 0x%02x: status %u\n", cmd->opcode, status);
			break;
		}
		if (vrnic_check_gone(dev)) {
			ret = -ENODEV;
			break;
		}
		if (time_after(jiffies, deadline)) {
			dev_err(&dev->pdev->dev, "admin opcode 0x%02x (command %u) timed out after %u ms\n",
				cmd->opcode, cmd_id, admin_timeout_ms);
			dev->admin_broken = true;
			ret = -ETIMEDOUT;
			break;
		}
	}
out:
	mutex_unlock(&dev->admin_lock);
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
	dma_free_coherent(&dev->pdev->dev, PAGE_SIZE, va, dma);
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
		if (!dev->registered)
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

	dev->asq = dma_alloc_coherent(d, VRNIC_ASQ_ENTRIES * sizeof(*dev->asq), &dev->asq_dma, GFP_KERNEL);
	dev->acq = dma_alloc_coherent(d, VRNIC_ACQ_ENTRIES * sizeof(*dev->acq), &dev->acq_dma, GFP_KERNEL);
	dev->eq = dma_alloc_coherent(d, VRNIC_EQ_ENTRIES * sizeof(*dev->eq), &dev->eq_dma, GFP_KERNEL);
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
		dev_warn(&dev->pdev->dev, "device still ready %d ms after reset\n", VRNIC_READY_TIMEOUT_MS);
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
