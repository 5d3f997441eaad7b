// SPDX-License-Identifier: GPL-2.0
/*
 * vrnic.c: reference Linux 6.1 driver for the vrnic emulated RDMA NIC (docs/device.md).
 *
 * What it exists to show: user mappings of UAR (doorbell) pages go through the RDMA core's
 * rdma_user_mmap_io tracking so that a hot unplug zaps them; the remove path never waits on a
 * device that has vanished. Three planted bugs (module parameter bug=) are the negative controls.
 */
#include <linux/module.h>
#include <linux/pci.h>
#include <linux/interrupt.h>
#include <linux/dma-mapping.h>
#include <linux/delay.h>
#include <linux/io.h>
#include <linux/mm.h>
#include <linux/sched/mm.h>
#include <linux/slab.h>
#include <rdma/ib_verbs.h>
#include <rdma/ib_umem.h>
#include <rdma/iter.h>
#include <rdma/uverbs_ioctl.h>

#include "vrnic-hw.h"
#include "vrnic-abi.h"

#define DRV_NAME "vrnic"

static char *bug = "none";
module_param(bug, charp, 0444);
MODULE_PARM_DESC(bug, "plant a classic driver bug: none (default), legacy-mmap, no-disassociate, private-tracking");

static unsigned int admin_timeout_ms = 5000;
module_param(admin_timeout_ms, uint, 0644);
MODULE_PARM_DESC(admin_timeout_ms, "bound on one admin command, in ms (default 5000)");

enum vrnic_bug {
	VRNIC_BUG_NONE,
	VRNIC_BUG_LEGACY_MMAP,
	VRNIC_BUG_NO_DISASSOCIATE,
	VRNIC_BUG_PRIVATE_TRACKING,
};

static enum vrnic_bug vrnic_bug;

#define VRNIC_ASQ_ENTRIES	64
#define VRNIC_ACQ_ENTRIES	64
#define VRNIC_EQ_ENTRIES	64
/* How long enable and reset may take before we give up on the device. */
#define VRNIC_READY_TIMEOUT_MS	3000

struct vrnic_dev {
	struct ib_device ibdev;
	struct pci_dev *pdev;
	void __iomem *regs;

	phys_addr_t uar_phys;
	resource_size_t uar_len;
	u32 num_uars;
	u32 num_ports;
	u32 num_vectors;	/* vectors we got (0: polling only; 1: one shared handler) */

	/* Set once a register read returned all-ones: nothing is sent to the device after that. */
	bool gone;

	/* Admin queue: one command in flight at a time, serialized by admin_lock. */
	struct mutex admin_lock;
	spinlock_t acq_lock;	/* ACQ consumer state; taken by the vector 0 handler and the poller */
	struct vrnic_asqe *asq;
	dma_addr_t asq_dma;
	u32 asq_tail;
	struct vrnic_acqe *acq;
	dma_addr_t acq_dma;
	u32 acq_head;
	u8 acq_phase;
	u32 next_cmd_id;
	u32 pending_cmd_id;	/* 0: none */
	bool have_result;
	struct vrnic_acqe result;
	struct completion admin_done;
	bool admin_broken;	/* a command timed out: the queue state is unknown */

	/* Event queue, drained by the vector 1 thread (ib_dispatch_event sleeps). */
	struct vrnic_eqe *eq;
	dma_addr_t eq_dma;
	u32 eq_head;
	u8 eq_phase;

	/* Limits read from BAR0 and refined by QUERY_DEVICE. */
	struct {
		u64 fw_version;
		u64 node_guid;
		u64 sys_image_guid;
		u64 max_mr_size;
		u32 max_pd, max_cq, max_qp, max_mr, max_cqe, max_qp_wr, max_sge;
	} caps;
	/* The last port attributes the device reported; used once it has gone. */
	struct vrnic_hw_port_attr port_cache;
	bool registered;
};

struct vrnic_ucontext {
	struct ib_ucontext ibuc;
	u32 uar_index;
	u32 num_uars;
	struct rdma_user_mmap_entry *uar_entry;

	/* bug=private-tracking only: the mappings mmap made, tracked the pre-4.20 way. */
	struct mutex vmas_lock;
	struct list_head vmas;
	struct mm_struct *owner_mm;	/* the creating process's address space (mmgrab) */
	struct page *dummy;		/* what the zapped mappings get instead of the BAR */
};

/* One mapping as bug=private-tracking remembers it: only what mmap saw, never told of copies. */
struct vrnic_private_vma {
	struct list_head list;
	struct vm_area_struct *vma;
	struct mm_struct *mm;		/* mmgrab: the pointer stays comparable */
	unsigned long start;
	struct file *file;
};

struct vrnic_mmap_entry {
	struct rdma_user_mmap_entry rdma;
	phys_addr_t phys;
};

struct vrnic_pd {
	struct ib_pd ibpd;
	u32 pdn;
};

/* User CQs and QPs only: their rings are one pinned user page each. */
struct vrnic_cq {
	struct ib_cq ibcq;
	u32 cqn;
	struct ib_umem *umem;
};

struct vrnic_qp {
	struct ib_qp ibqp;
	u32 qpn;
	/* The state the device last accepted: MODIFY_QP always names one. */
	enum ib_qp_state state;
	struct ib_umem *sq_umem;
	struct ib_umem *rq_umem;
};

struct vrnic_mr {
	struct ib_mr ibmr;
	struct ib_umem *umem;
};

static inline struct vrnic_dev *to_vdev(struct ib_device *ibdev)
{
	return container_of(ibdev, struct vrnic_dev, ibdev);
}

static inline struct vrnic_ucontext *to_vuc(struct ib_ucontext *uc)
{
	return container_of(uc, struct vrnic_ucontext, ibuc);
}

/* ---- registers ---------------------------------------------------------------------------- */

/* A read that also notices the device leaving: all-ones is what a vanished PCIe device returns. */
static u32 vrnic_read(struct vrnic_dev *dev, u32 off)
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

static void vrnic_write(struct vrnic_dev *dev, u32 off, u32 val)
{
	if (READ_ONCE(dev->gone))
		return;
	writel(val, dev->regs + off);
}

static void vrnic_write64(struct vrnic_dev *dev, u32 lo, u64 val)
{
	vrnic_write(dev, lo, lower_32_bits(val));
	vrnic_write(dev, lo + 4, upper_32_bits(val));
}

static bool vrnic_check_gone(struct vrnic_dev *dev)
{
	vrnic_read(dev, VRNIC_REG_STATUS);
	return READ_ONCE(dev->gone);
}

/* Waits (bounded) until STATUS.READY equals want; fails at once on FATAL or a vanished device. */
static int vrnic_wait_ready(struct vrnic_dev *dev, bool want)
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

static irqreturn_t vrnic_admin_irq(int irq, void *data)
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
static irqreturn_t vrnic_irq(int irq, void *data)
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
static int vrnic_admin_exec(struct vrnic_dev *dev, struct vrnic_asqe *cmd, struct vrnic_acqe *out)
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
static int vrnic_admin_query(struct vrnic_dev *dev, u8 opcode, u32 port, void *buf, size_t len)
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

static int vrnic_admin_simple(struct vrnic_dev *dev, u8 opcode, u32 dw0, u32 dw1, u32 *result0)
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

static irqreturn_t vrnic_event_thread(int irq, void *data)
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

/* ---- verbs --------------------------------------------------------------------------------- */

static int vrnic_query_device(struct ib_device *ibdev, struct ib_device_attr *attr,
			      struct ib_udata *udata)
{
	struct vrnic_dev *dev = to_vdev(ibdev);

	if (udata && (udata->inlen || udata->outlen))
		return -EINVAL;
	memset(attr, 0, sizeof(*attr));
	attr->fw_ver = dev->caps.fw_version;
	attr->sys_image_guid = cpu_to_be64(dev->caps.sys_image_guid);
	attr->max_mr_size = dev->caps.max_mr_size;
	attr->page_size_cap = PAGE_SIZE;
	attr->vendor_id = dev->pdev->vendor;
	attr->vendor_part_id = dev->pdev->device;
	attr->hw_ver = dev->pdev->revision;
	attr->max_qp = dev->caps.max_qp;
	attr->max_qp_wr = dev->caps.max_qp_wr;
	attr->max_send_sge = dev->caps.max_sge;
	attr->max_recv_sge = dev->caps.max_sge;
	attr->max_sge_rd = dev->caps.max_sge;
	attr->max_cq = dev->caps.max_cq;
	attr->max_cqe = dev->caps.max_cqe;
	attr->max_mr = dev->caps.max_mr;
	attr->max_pd = dev->caps.max_pd;
	attr->max_pkeys = 1;
	attr->atomic_cap = IB_ATOMIC_NONE;
	attr->masked_atomic_cap = IB_ATOMIC_NONE;
	return 0;
}

static void vrnic_fill_port_attr(const struct vrnic_hw_port_attr *hw, struct ib_port_attr *attr)
{
	attr->state = le32_to_cpu(hw->state);
	attr->phys_state = le32_to_cpu(hw->phys_state);
	attr->max_mtu = le32_to_cpu(hw->max_mtu);
	attr->active_mtu = le32_to_cpu(hw->active_mtu);
	attr->lid = le32_to_cpu(hw->lid);
	attr->sm_lid = le32_to_cpu(hw->sm_lid);
	attr->active_width = le32_to_cpu(hw->active_width);
	attr->active_speed = le32_to_cpu(hw->active_speed);
	/* get_port_immutable promised the core tables of one entry each. */
	attr->gid_tbl_len = 1;
	attr->pkey_tbl_len = 1;
	attr->max_msg_sz = le32_to_cpu(hw->max_msg_sz) ?: 0x80000000;
	attr->max_vl_num = 1;
	attr->port_cap_flags = 0;
	/* Values a device could report out of range are clamped to something the core accepts. */
	if (attr->max_mtu < IB_MTU_256 || attr->max_mtu > IB_MTU_4096)
		attr->max_mtu = IB_MTU_4096;
	if (attr->active_mtu < IB_MTU_256 || attr->active_mtu > attr->max_mtu)
		attr->active_mtu = attr->max_mtu;
	if (attr->state < IB_PORT_NOP || attr->state > IB_PORT_ACTIVE_DEFER)
		attr->state = IB_PORT_DOWN;
}

static int vrnic_query_port(struct ib_device *ibdev, u32 port, struct ib_port_attr *attr)
{
	struct vrnic_dev *dev = to_vdev(ibdev);
	struct vrnic_hw_port_attr hw;
	int ret;

	if (port != 1)
		return -EINVAL;
	ret = vrnic_admin_query(dev, VRNIC_ADMIN_QUERY_PORT, port, &hw, sizeof(hw));
	if (ret) {
		/* A vanished device is a port that is down, not an error the core must handle. */
		hw = dev->port_cache;
		hw.state = cpu_to_le32(IB_PORT_DOWN);
		hw.phys_state = cpu_to_le32(3);
	} else {
		dev->port_cache = hw;
	}
	vrnic_fill_port_attr(&hw, attr);
	return 0;
}

static int vrnic_get_port_immutable(struct ib_device *ibdev, u32 port,
				    struct ib_port_immutable *immutable)
{
	if (port != 1)
		return -EINVAL;
	immutable->pkey_tbl_len = 1;
	immutable->gid_tbl_len = 1;
	/*
	 * InfiniBand protocol without MAD/SMI/CM/SA: the device has no QP0/QP1, so the core's MAD
	 * layer must not try to open the port (it would need a DMA MR we cannot give).
	 */
	immutable->core_cap_flags = RDMA_CORE_CAP_PROT_IB;
	immutable->max_mad_size = 0;
	return 0;
}

static int vrnic_query_pkey(struct ib_device *ibdev, u32 port, u16 index, u16 *pkey)
{
	if (index > 0)
		return -EINVAL;
	*pkey = 0xffff;
	return 0;
}

static int vrnic_query_gid(struct ib_device *ibdev, u32 port, int index, union ib_gid *gid)
{
	struct vrnic_dev *dev = to_vdev(ibdev);

	if (index != 0)
		return -EINVAL;
	if (memchr_inv(dev->port_cache.gid0, 0, sizeof(dev->port_cache.gid0))) {
		memcpy(gid->raw, dev->port_cache.gid0, sizeof(gid->raw));
		return 0;
	}
	gid->global.subnet_prefix = cpu_to_be64(0xfe80000000000000ULL);
	gid->global.interface_id = cpu_to_be64(dev->caps.node_guid);
	return 0;
}

static int vrnic_alloc_ucontext(struct ib_ucontext *ibuc, struct ib_udata *udata)
{
	struct vrnic_ucontext *uc = to_vuc(ibuc);
	struct vrnic_dev *dev = to_vdev(ibuc->device);
	struct vrnic_alloc_ucontext_req req = {};
	struct vrnic_alloc_ucontext_resp resp = {};
	struct vrnic_mmap_entry *entry;
	u32 index;
	int ret;

	if (udata->inlen) {
		ret = ib_copy_from_udata(&req, udata, min(udata->inlen, sizeof(req)));
		if (ret)
			return ret;
	}
	if (!req.num_uars)
		req.num_uars = 1;
	if (req.num_uars > VRNIC_MAX_UARS_PER_CONTEXT || req.num_uars > dev->num_uars || req.reserved)
		return -EINVAL;

	ret = vrnic_admin_simple(dev, VRNIC_ADMIN_ALLOC_UAR, req.num_uars, 0, &index);
	if (ret)
		return ret;
	/* The device's answer is checked like any input before it becomes a user mapping. */
	if (index >= dev->num_uars || req.num_uars > dev->num_uars - index) {
		dev_err(&dev->pdev->dev, "ALLOC_UAR returned index %u for %u pages of %u\n",
			index, req.num_uars, dev->num_uars);
		ret = -EIO;
		goto err_free_uar;
	}

	entry = kzalloc(sizeof(*entry), GFP_KERNEL);
	if (!entry) {
		ret = -ENOMEM;
		goto err_free_uar;
	}
	entry->phys = dev->uar_phys + (phys_addr_t)index * VRNIC_UAR_PAGE_SIZE;
	ret = rdma_user_mmap_entry_insert(ibuc, &entry->rdma, (size_t)req.num_uars * PAGE_SIZE);
	if (ret) {
		kfree(entry);
		goto err_free_uar;
	}
	uc->uar_index = index;
	uc->num_uars = req.num_uars;
	uc->uar_entry = &entry->rdma;

	resp.abi_version = VRNIC_UVERBS_ABI_VERSION;
	resp.num_uars = uc->num_uars;
	resp.uar_index = uc->uar_index;
	resp.uar_page_size = VRNIC_UAR_PAGE_SIZE;
	resp.uar_mmap_offset = rdma_user_mmap_get_offset(uc->uar_entry);
	if (vrnic_bug == VRNIC_BUG_LEGACY_MMAP)
		resp.driver_flags |= VRNIC_DRIVER_FLAG_LEGACY_MMAP;
	if (vrnic_bug == VRNIC_BUG_NO_DISASSOCIATE)
		resp.driver_flags |= VRNIC_DRIVER_FLAG_NO_DISASSOCIATE;
	if (vrnic_bug == VRNIC_BUG_PRIVATE_TRACKING)
		resp.driver_flags |= VRNIC_DRIVER_FLAG_PRIVATE_TRACKING;
	ret = ib_copy_to_udata(udata, &resp, min(udata->outlen, sizeof(resp)));
	if (ret)
		goto err_remove;
	if (vrnic_bug == VRNIC_BUG_PRIVATE_TRACKING) {
		mutex_init(&uc->vmas_lock);
		INIT_LIST_HEAD(&uc->vmas);
		uc->owner_mm = current->mm;
		mmgrab(uc->owner_mm);
	}
	return 0;

err_remove:
	rdma_user_mmap_entry_remove(uc->uar_entry);
	uc->uar_entry = NULL;
err_free_uar:
	vrnic_admin_simple(dev, VRNIC_ADMIN_FREE_UAR, index, 0, NULL);
	return ret;
}

static void vrnic_private_forget_all(struct vrnic_ucontext *uc);

static void vrnic_dealloc_ucontext(struct ib_ucontext *ibuc)
{
	struct vrnic_ucontext *uc = to_vuc(ibuc);
	struct vrnic_dev *dev = to_vdev(ibuc->device);

	if (uc->owner_mm) {
		vrnic_private_forget_all(uc);
		mmdrop(uc->owner_mm);
		uc->owner_mm = NULL;
	}

	/* Every entry we inserted goes, or the core WARNs on removal. */
	if (uc->uar_entry) {
		rdma_user_mmap_entry_remove(uc->uar_entry);
		uc->uar_entry = NULL;
	}
	if (uc->num_uars) {
		int ret = vrnic_admin_simple(dev, VRNIC_ADMIN_FREE_UAR, uc->uar_index, 0, NULL);

		if (ret && ret != -ENODEV)
			dev_warn(&dev->pdev->dev, "FREE_UAR %u+%u failed: %d\n",
				 uc->uar_index, uc->num_uars, ret);
	}
}

static void vrnic_mmap_free(struct rdma_user_mmap_entry *rdma_entry)
{
	kfree(container_of(rdma_entry, struct vrnic_mmap_entry, rdma));
}

/*
 * The planted legacy-mmap bug: the mapping is made behind the core's back, so nothing zaps it
 * when the device goes and the process keeps pointing at the BAR's physical frames.
 */
static int vrnic_legacy_mmap(struct vm_area_struct *vma, struct vrnic_mmap_entry *entry)
{
	unsigned long size = entry->rdma.npages * PAGE_SIZE;

	if (vma->vm_end - vma->vm_start != size || !(vma->vm_flags & VM_SHARED))
		return -EINVAL;
	vma->vm_flags |= VM_IO | VM_PFNMAP | VM_DONTEXPAND | VM_DONTDUMP;
	vma->vm_flags &= ~VM_MAYEXEC;
	return io_remap_pfn_range(vma, vma->vm_start, PHYS_PFN(entry->phys), size,
				  pgprot_noncached(vma->vm_page_prot));
}

/*
 * The planted private-tracking bug, the way drivers zapped user mappings before the RDMA core
 * did it for them (Linux 4.20): mmap maps the BAR itself and remembers the VMA in a private
 * list; disassociate zaps what the list holds, in the creating process's address space, and
 * puts a zeroed page in its place. There are no vm_operations open/close, so the driver never
 * hears of the copy fork makes, of the pieces a munmap or mprotect splits off (they are new
 * VMAs), or of a mapping made in another process: those keep pointing at the BAR.
 */
static int vrnic_private_mmap(struct vrnic_ucontext *uc, struct vm_area_struct *vma,
			      struct vrnic_mmap_entry *entry)
{
	struct vrnic_private_vma *pv;
	int ret;

	pv = kzalloc(sizeof(*pv), GFP_KERNEL);
	if (!pv)
		return -ENOMEM;
	ret = vrnic_legacy_mmap(vma, entry);
	if (ret) {
		kfree(pv);
		return ret;
	}
	pv->vma = vma;
	pv->mm = vma->vm_mm;
	mmgrab(pv->mm);
	pv->start = vma->vm_start;
	pv->file = vma->vm_file;
	mutex_lock(&uc->vmas_lock);
	list_add_tail(&pv->list, &uc->vmas);
	mutex_unlock(&uc->vmas_lock);
	return 0;
}

/* Caller holds the address space's mmap lock for writing: no fault runs between zap and insert. */
static void vrnic_private_zap_one(struct vrnic_ucontext *uc, struct vrnic_private_vma *pv)
{
	struct vm_area_struct *vma = find_vma(pv->mm, pv->start);
	unsigned long addr;

	/* Without a close op nothing says when a VMA goes: touch only one still as mmap left it. */
	if (vma != pv->vma || vma->vm_start != pv->start || vma->vm_file != pv->file)
		return;
	zap_vma_ptes(vma, vma->vm_start, vma->vm_end - vma->vm_start);
	if (!uc->dummy)
		return;
	for (addr = vma->vm_start; addr < vma->vm_end; addr += PAGE_SIZE)
		vmf_insert_pfn(vma, addr, page_to_pfn(uc->dummy));
}

static void vrnic_private_forget(struct vrnic_private_vma *pv)
{
	list_del(&pv->list);
	mmdrop(pv->mm);
	kfree(pv);
}

static void vrnic_private_forget_all(struct vrnic_ucontext *uc)
{
	struct vrnic_private_vma *pv, *tmp;

	mutex_lock(&uc->vmas_lock);
	list_for_each_entry_safe(pv, tmp, &uc->vmas, list)
		vrnic_private_forget(pv);
	mutex_unlock(&uc->vmas_lock);
}

static void vrnic_private_zap(struct vrnic_ucontext *uc)
{
	struct mm_struct *mm = uc->owner_mm;
	struct vrnic_private_vma *pv, *tmp;

	if (!mm || !mmget_not_zero(mm)) {
		vrnic_private_forget_all(uc);
		return;
	}
	/*
	 * One zeroed page per context, like the core's per-file page. It is never freed: with no
	 * close op the driver cannot know when the last mapping of it goes (the core's tracking
	 * exists to know that); a page per removed context is what this bug costs.
	 */
	if (!uc->dummy)
		uc->dummy = alloc_page(GFP_KERNEL | __GFP_ZERO);
	mmap_write_lock(mm);
	mutex_lock(&uc->vmas_lock);
	list_for_each_entry_safe(pv, tmp, &uc->vmas, list) {
		if (pv->mm == mm)
			vrnic_private_zap_one(uc, pv);
		vrnic_private_forget(pv);
	}
	mutex_unlock(&uc->vmas_lock);
	mmap_write_unlock(mm);
	mmput(mm);
}

static int vrnic_mmap(struct ib_ucontext *ibuc, struct vm_area_struct *vma)
{
	struct rdma_user_mmap_entry *rdma_entry;
	struct vrnic_mmap_entry *entry;
	int ret;

	if (vma->vm_flags & VM_EXEC)
		return -EPERM;
	rdma_entry = rdma_user_mmap_entry_get(ibuc, vma);
	if (!rdma_entry)
		return -EINVAL;
	entry = container_of(rdma_entry, struct vrnic_mmap_entry, rdma);
	if (vrnic_bug == VRNIC_BUG_LEGACY_MMAP)
		ret = vrnic_legacy_mmap(vma, entry);
	else if (vrnic_bug == VRNIC_BUG_PRIVATE_TRACKING)
		ret = vrnic_private_mmap(to_vuc(ibuc), vma, entry);
	else
		ret = rdma_user_mmap_io(ibuc, vma, PHYS_PFN(entry->phys),
					rdma_entry->npages * PAGE_SIZE,
					pgprot_noncached(vma->vm_page_prot), rdma_entry);
	rdma_user_mmap_entry_put(rdma_entry);
	return ret;
}

/* The core zaps user mappings itself; the hardware needs nothing more (as mlx5). */
static void vrnic_disassociate_ucontext(struct ib_ucontext *ibuc)
{
	if (vrnic_bug == VRNIC_BUG_PRIVATE_TRACKING)
		vrnic_private_zap(to_vuc(ibuc));
}

static int vrnic_alloc_pd(struct ib_pd *ibpd, struct ib_udata *udata)
{
	struct vrnic_pd *pd = container_of(ibpd, struct vrnic_pd, ibpd);
	struct vrnic_dev *dev = to_vdev(ibpd->device);
	int ret;

	ret = vrnic_admin_simple(dev, VRNIC_ADMIN_CREATE_PD, 0, 0, &pd->pdn);
	if (ret)
		return ret;
	if (udata && udata->outlen) {
		struct vrnic_alloc_pd_resp resp = { .pdn = pd->pdn };

		ret = ib_copy_to_udata(udata, &resp, min(udata->outlen, sizeof(resp)));
		if (ret) {
			vrnic_admin_simple(dev, VRNIC_ADMIN_DESTROY_PD, pd->pdn, 0, NULL);
			return ret;
		}
	}
	return 0;
}

static int vrnic_dealloc_pd(struct ib_pd *ibpd, struct ib_udata *udata)
{
	struct vrnic_pd *pd = container_of(ibpd, struct vrnic_pd, ibpd);
	int ret = vrnic_admin_simple(to_vdev(ibpd->device), VRNIC_ADMIN_DESTROY_PD, pd->pdn, 0, NULL);

	/* A device that is gone holds no PD; the core cannot do anything with an error here. */
	return ret == -ENODEV ? 0 : ret;
}

/*
 * Pins one page-aligned user ring of at most one page and returns its bus address: the device
 * wants a contiguous ring, and one page is contiguous whatever the IOMMU does.
 */
static struct ib_umem *vrnic_pin_ring(struct vrnic_dev *dev, u64 addr, size_t bytes, int access,
				      dma_addr_t *dma)
{
	struct ib_block_iter biter;
	struct ib_umem *umem;

	if (!addr || (addr & ~PAGE_MASK) || !bytes || bytes > VRNIC_USER_RING_BYTES || bytes > PAGE_SIZE)
		return ERR_PTR(-EINVAL);
	umem = ib_umem_get(&dev->ibdev, addr, bytes, access);
	if (IS_ERR(umem))
		return umem;
	if (ib_umem_num_dma_blocks(umem, PAGE_SIZE) != 1) {
		ib_umem_release(umem);
		return ERR_PTR(-EINVAL);
	}
	rdma_umem_for_each_dma_block(umem, &biter, PAGE_SIZE) {
		*dma = rdma_block_iter_dma_address(&biter);
		break;
	}
	return umem;
}

static struct vrnic_ucontext *vrnic_uctx(struct ib_udata *udata)
{
	return rdma_udata_to_drv_context(udata, struct vrnic_ucontext, ibuc);
}

static int vrnic_create_cq(struct ib_cq *ibcq, const struct ib_cq_init_attr *attr,
			   struct ib_udata *udata)
{
	struct vrnic_dev *dev = to_vdev(ibcq->device);
	struct vrnic_cq *cq = container_of(ibcq, struct vrnic_cq, ibcq);
	struct vrnic_asqe cmd = { .opcode = VRNIC_ADMIN_CREATE_CQ };
	struct vrnic_create_cq_resp resp = {};
	struct vrnic_create_cq_req req;
	struct vrnic_ucontext *uc;
	struct vrnic_acqe cqe;
	dma_addr_t dma;
	u32 entries;
	int ret;

	/* Kernel CQs would need a kernel data path; nothing in this guest uses one. */
	if (!udata)
		return -EOPNOTSUPP;
	if (attr->flags || udata->inlen < sizeof(req))
		return -EINVAL;
	ret = ib_copy_from_udata(&req, udata, sizeof(req));
	if (ret)
		return ret;
	uc = vrnic_uctx(udata);
	if (!uc || !uc->num_uars)
		return -EINVAL;
	entries = roundup_pow_of_two(max_t(u32, attr->cqe, 2));
	if (attr->cqe > VRNIC_USER_RING_BYTES / VRNIC_CQE_BYTES || entries > dev->caps.max_cqe)
		return -EINVAL;
	cq->umem = vrnic_pin_ring(dev, req.buf_addr, entries * VRNIC_CQE_BYTES, IB_ACCESS_LOCAL_WRITE, &dma);
	if (IS_ERR(cq->umem))
		return PTR_ERR(cq->umem);

	cmd.create_cq.buf_addr = cpu_to_le64(dma);
	cmd.create_cq.entries = cpu_to_le32(entries);
	cmd.create_cq.comp_vector = cpu_to_le32(attr->comp_vector);
	cmd.create_cq.uar_index = cpu_to_le32(uc->uar_index);
	ret = vrnic_admin_exec(dev, &cmd, &cqe);
	if (ret)
		goto err_umem;
	cq->cqn = le32_to_cpu(cqe.result0);
	ibcq->cqe = entries;
	resp.cqn = cq->cqn;
	resp.doorbell_offset = le32_to_cpu(cqe.result1);
	resp.uar_index = uc->uar_index;
	resp.entries = entries;
	ret = ib_copy_to_udata(udata, &resp, min(udata->outlen, sizeof(resp)));
	if (ret)
		goto err_destroy;
	return 0;

err_destroy:
	vrnic_admin_simple(dev, VRNIC_ADMIN_DESTROY_CQ, cq->cqn, 0, NULL);
err_umem:
	ib_umem_release(cq->umem);
	return ret;
}

static int vrnic_destroy_cq(struct ib_cq *ibcq, struct ib_udata *udata)
{
	struct vrnic_cq *cq = container_of(ibcq, struct vrnic_cq, ibcq);
	struct vrnic_dev *dev = to_vdev(ibcq->device);
	int ret = vrnic_admin_simple(dev, VRNIC_ADMIN_DESTROY_CQ, cq->cqn, 0, NULL);

	if (ret && ret != -ENODEV)
		dev_warn(&dev->pdev->dev, "DESTROY_CQ %u failed: %d\n", cq->cqn, ret);
	/* Only after the device let go of the ring (or is gone) may the pages be unpinned. */
	ib_umem_release(cq->umem);
	return 0;
}

static int vrnic_poll_cq(struct ib_cq *ibcq, int num_entries, struct ib_wc *wc)
{
	return 0;	/* user CQs are polled in user space */
}

static int vrnic_req_notify_cq(struct ib_cq *ibcq, enum ib_cq_notify_flags flags)
{
	return -EOPNOTSUPP;
}

static u32 vrnic_ring_entries(u32 wr)
{
	return wr ? roundup_pow_of_two(max_t(u32, wr, 2)) : 0;
}

static int vrnic_create_qp(struct ib_qp *ibqp, struct ib_qp_init_attr *attr, struct ib_udata *udata)
{
	struct vrnic_dev *dev = to_vdev(ibqp->device);
	struct vrnic_qp *qp = container_of(ibqp, struct vrnic_qp, ibqp);
	struct vrnic_asqe cmd = { .opcode = VRNIC_ADMIN_CREATE_QP };
	struct vrnic_create_qp_resp resp = {};
	struct vrnic_create_qp_req req;
	struct vrnic_ucontext *uc;
	dma_addr_t sq_dma, rq_dma = 0;
	struct vrnic_acqe cqe;
	u32 sq_entries, rq_entries;
	int ret;

	if (!udata)
		return -EOPNOTSUPP;
	if (attr->qp_type != IB_QPT_RC && attr->qp_type != IB_QPT_UC && attr->qp_type != IB_QPT_UD)
		return -EOPNOTSUPP;
	if (attr->srq || attr->create_flags || !attr->send_cq || !attr->recv_cq || udata->inlen < sizeof(req))
		return -EINVAL;
	if (attr->cap.max_send_sge > dev->caps.max_sge || attr->cap.max_recv_sge > dev->caps.max_sge ||
	    attr->cap.max_inline_data)
		return -EINVAL;
	ret = ib_copy_from_udata(&req, udata, sizeof(req));
	if (ret)
		return ret;
	uc = vrnic_uctx(udata);
	if (!uc || !uc->num_uars)
		return -EINVAL;
	sq_entries = vrnic_ring_entries(attr->cap.max_send_wr);
	rq_entries = vrnic_ring_entries(attr->cap.max_recv_wr);
	if (!sq_entries || attr->cap.max_send_wr > VRNIC_USER_RING_BYTES / VRNIC_WQE_BYTES ||
	    attr->cap.max_recv_wr > VRNIC_USER_RING_BYTES / VRNIC_WQE_BYTES ||
	    sq_entries > dev->caps.max_qp_wr || rq_entries > dev->caps.max_qp_wr)
		return -EINVAL;

	qp->sq_umem = vrnic_pin_ring(dev, req.sq_addr, sq_entries * VRNIC_WQE_BYTES, 0, &sq_dma);
	if (IS_ERR(qp->sq_umem))
		return PTR_ERR(qp->sq_umem);
	if (rq_entries) {
		qp->rq_umem = vrnic_pin_ring(dev, req.rq_addr, rq_entries * VRNIC_WQE_BYTES, 0, &rq_dma);
		if (IS_ERR(qp->rq_umem)) {
			ret = PTR_ERR(qp->rq_umem);
			qp->rq_umem = NULL;
			goto err_sq;
		}
	}
	cmd.create_qp.pdn = cpu_to_le32(container_of(ibqp->pd, struct vrnic_pd, ibpd)->pdn);
	cmd.create_qp.send_cqn = cpu_to_le32(container_of(attr->send_cq, struct vrnic_cq, ibcq)->cqn);
	cmd.create_qp.recv_cqn = cpu_to_le32(container_of(attr->recv_cq, struct vrnic_cq, ibcq)->cqn);
	cmd.create_qp.uar_index = cpu_to_le32(uc->uar_index);
	cmd.create_qp.sq_addr = cpu_to_le64(sq_dma);
	cmd.create_qp.rq_addr = cpu_to_le64(rq_dma);
	cmd.create_qp.sq_entries = cpu_to_le32(sq_entries);
	cmd.create_qp.rq_entries = cpu_to_le32(rq_entries);
	cmd.create_qp.qp_type = cpu_to_le32(attr->qp_type);
	ret = vrnic_admin_exec(dev, &cmd, &cqe);
	if (ret)
		goto err_rq;
	qp->qpn = le32_to_cpu(cqe.result0);
	ibqp->qp_num = qp->qpn;
	attr->cap.max_send_wr = sq_entries;
	attr->cap.max_recv_wr = rq_entries;
	resp.qpn = qp->qpn;
	resp.doorbell_offset = le32_to_cpu(cqe.result1);
	resp.uar_index = uc->uar_index;
	resp.sq_entries = sq_entries;
	resp.rq_entries = rq_entries;
	ret = ib_copy_to_udata(udata, &resp, min(udata->outlen, sizeof(resp)));
	if (ret)
		goto err_destroy;
	return 0;

err_destroy:
	vrnic_admin_simple(dev, VRNIC_ADMIN_DESTROY_QP, qp->qpn, 0, NULL);
err_rq:
	if (qp->rq_umem)
		ib_umem_release(qp->rq_umem);
err_sq:
	ib_umem_release(qp->sq_umem);
	return ret;
}

/* The attributes MODIFY_QP carries; the device takes Linux's IB_QP_* bits as they are. */
#define VRNIC_QP_ATTRS (IB_QP_STATE | IB_QP_ACCESS_FLAGS | IB_QP_PKEY_INDEX | IB_QP_PORT | \
			IB_QP_QKEY | IB_QP_AV | IB_QP_PATH_MTU | IB_QP_TIMEOUT | IB_QP_RETRY_CNT | \
			IB_QP_RNR_RETRY | IB_QP_RQ_PSN | IB_QP_MAX_QP_RD_ATOMIC | \
			IB_QP_MIN_RNR_TIMER | IB_QP_SQ_PSN | IB_QP_MAX_DEST_RD_ATOMIC | \
			IB_QP_DEST_QPN)

static int vrnic_modify_qp(struct ib_qp *ibqp, struct ib_qp_attr *attr, int mask,
			   struct ib_udata *udata)
{
	struct vrnic_qp *qp = container_of(ibqp, struct vrnic_qp, ibqp);
	struct vrnic_asqe cmd = { .opcode = VRNIC_ADMIN_MODIFY_QP };
	enum ib_qp_state state = mask & IB_QP_STATE ? attr->qp_state : qp->state;
	struct vrnic_acqe cqe;
	int ret;

	if (mask & ~VRNIC_QP_ATTRS)
		return -EOPNOTSUPP;
	switch (state) {
	case IB_QPS_RESET:
	case IB_QPS_INIT:
	case IB_QPS_RTR:
	case IB_QPS_RTS:
	case IB_QPS_ERR:
		break;
	default:
		return -EOPNOTSUPP;
	}
	cmd.modify_qp.qpn = cpu_to_le32(qp->qpn);
	cmd.modify_qp.state = cpu_to_le32(state);
	cmd.modify_qp.attr_mask = cpu_to_le32(mask & ~IB_QP_STATE);
	if (mask & IB_QP_ACCESS_FLAGS)
		cmd.modify_qp.access_flags = cpu_to_le32(attr->qp_access_flags);
	if (mask & IB_QP_QKEY)
		cmd.modify_qp.qkey = cpu_to_le32(attr->qkey);
	if (mask & IB_QP_DEST_QPN)
		cmd.modify_qp.dest_qpn = cpu_to_le32(attr->dest_qp_num);
	if (mask & IB_QP_RQ_PSN)
		cmd.modify_qp.rq_psn = cpu_to_le32(attr->rq_psn);
	if (mask & IB_QP_SQ_PSN)
		cmd.modify_qp.sq_psn = cpu_to_le32(attr->sq_psn);
	if (mask & IB_QP_AV)
		cmd.modify_qp.dlid = cpu_to_le16(rdma_ah_get_dlid(&attr->ah_attr));
	if (mask & IB_QP_PORT)
		cmd.modify_qp.port_num = attr->port_num;
	if (mask & IB_QP_PATH_MTU)
		cmd.modify_qp.path_mtu = attr->path_mtu;
	if (mask & IB_QP_TIMEOUT)
		cmd.modify_qp.timeout = attr->timeout;
	if (mask & IB_QP_RETRY_CNT)
		cmd.modify_qp.retry_cnt = attr->retry_cnt;
	if (mask & IB_QP_RNR_RETRY)
		cmd.modify_qp.rnr_retry = attr->rnr_retry;
	if (mask & IB_QP_MIN_RNR_TIMER)
		cmd.modify_qp.min_rnr_timer = attr->min_rnr_timer;
	if (mask & IB_QP_PKEY_INDEX)
		cmd.modify_qp.pkey_index = cpu_to_le16(attr->pkey_index);
	ret = vrnic_admin_exec(to_vdev(ibqp->device), &cmd, &cqe);
	if (!ret)
		qp->state = state;
	return ret;
}

static int vrnic_destroy_qp(struct ib_qp *ibqp, struct ib_udata *udata)
{
	struct vrnic_qp *qp = container_of(ibqp, struct vrnic_qp, ibqp);
	struct vrnic_dev *dev = to_vdev(ibqp->device);
	int ret = vrnic_admin_simple(dev, VRNIC_ADMIN_DESTROY_QP, qp->qpn, 0, NULL);

	if (ret && ret != -ENODEV)
		dev_warn(&dev->pdev->dev, "DESTROY_QP %u failed: %d\n", qp->qpn, ret);
	if (qp->rq_umem)
		ib_umem_release(qp->rq_umem);
	ib_umem_release(qp->sq_umem);
	return 0;
}

static int vrnic_post_send(struct ib_qp *ibqp, const struct ib_send_wr *wr,
			   const struct ib_send_wr **bad_wr)
{
	*bad_wr = wr;
	return -EOPNOTSUPP;
}

static int vrnic_post_recv(struct ib_qp *ibqp, const struct ib_recv_wr *wr,
			   const struct ib_recv_wr **bad_wr)
{
	*bad_wr = wr;
	return -EOPNOTSUPP;
}

static struct ib_mr *vrnic_get_dma_mr(struct ib_pd *ibpd, int access)
{
	return ERR_PTR(-EOPNOTSUPP);
}

/*
 * A user MR is registered with the device as a page list: user memory is not physically
 * contiguous. The list lives in coherent memory only until the command completes (the device
 * reads it once).
 */
static struct ib_mr *vrnic_reg_user_mr(struct ib_pd *ibpd, u64 start, u64 length, u64 virt,
				       int access, struct ib_udata *udata)
{
	struct vrnic_dev *dev = to_vdev(ibpd->device);
	struct vrnic_pd *pd = container_of(ibpd, struct vrnic_pd, ibpd);
	struct vrnic_asqe cmd = { .opcode = VRNIC_ADMIN_REG_MR, .flags = VRNIC_REG_MR_FLAG_PAGE_LIST };
	struct ib_block_iter biter;
	struct vrnic_acqe cqe;
	struct vrnic_mr *mr;
	dma_addr_t list_dma;
	__le64 *list;
	size_t npages, i = 0;
	int ret;

	if (access & ~VRNIC_MR_ACCESS_MASK)
		return ERR_PTR(-EOPNOTSUPP);
	/* The device places the MR's first byte at iova's offset in the first page. */
	if (!length || length > dev->caps.max_mr_size || (virt & ~PAGE_MASK) != (start & ~PAGE_MASK))
		return ERR_PTR(-EINVAL);
	mr = kzalloc(sizeof(*mr), GFP_KERNEL);
	if (!mr)
		return ERR_PTR(-ENOMEM);
	mr->umem = ib_umem_get(ibpd->device, start, length, access);
	if (IS_ERR(mr->umem)) {
		ret = PTR_ERR(mr->umem);
		goto err_free;
	}
	npages = ib_umem_num_dma_blocks(mr->umem, PAGE_SIZE);
	if (!npages || npages > VRNIC_MAX_MR_PAGES) {
		ret = -EINVAL;
		goto err_umem;
	}
	list = dma_alloc_coherent(&dev->pdev->dev, npages * sizeof(*list), &list_dma, GFP_KERNEL);
	if (!list) {
		ret = -ENOMEM;
		goto err_umem;
	}
	rdma_umem_for_each_dma_block(mr->umem, &biter, PAGE_SIZE) {
		if (i == npages)
			break;
		list[i++] = cpu_to_le64(rdma_block_iter_dma_address(&biter));
	}
	cmd.reg_mr.pdn = cpu_to_le32(pd->pdn);
	cmd.reg_mr.access = cpu_to_le32(access);
	cmd.reg_mr.iova = cpu_to_le64(virt);
	cmd.reg_mr.length = cpu_to_le64(length);
	cmd.reg_mr.addr = cpu_to_le64(list_dma);
	cmd.reg_mr.page_count = cpu_to_le32(i);
	cmd.reg_mr.page_shift = cpu_to_le32(PAGE_SHIFT);
	ret = vrnic_admin_exec(dev, &cmd, &cqe);
	dma_free_coherent(&dev->pdev->dev, npages * sizeof(*list), list, list_dma);
	if (ret)
		goto err_umem;
	mr->ibmr.lkey = le32_to_cpu(cqe.result0);
	mr->ibmr.rkey = le32_to_cpu(cqe.result1);
	return &mr->ibmr;

err_umem:
	ib_umem_release(mr->umem);
err_free:
	kfree(mr);
	return ERR_PTR(ret);
}

static int vrnic_dereg_mr(struct ib_mr *ibmr, struct ib_udata *udata)
{
	struct vrnic_mr *mr = container_of(ibmr, struct vrnic_mr, ibmr);
	int ret = vrnic_admin_simple(to_vdev(ibmr->device), VRNIC_ADMIN_DEREG_MR, ibmr->lkey, 0, NULL);

	/* The core frees the MR whatever we return during disassociation; a dead device holds none. */
	if (ret && ret != -ENODEV)
		dev_warn(&to_vdev(ibmr->device)->pdev->dev, "DEREG_MR 0x%x failed: %d\n", ibmr->lkey, ret);
	ib_umem_release(mr->umem);
	kfree(mr);
	return 0;
}

static const struct ib_device_ops vrnic_dev_ops = {
	.owner = THIS_MODULE,
	.driver_id = RDMA_DRIVER_UNKNOWN,
	.uverbs_abi_ver = VRNIC_UVERBS_ABI_VERSION,

	.query_device = vrnic_query_device,
	.query_port = vrnic_query_port,
	.get_port_immutable = vrnic_get_port_immutable,
	.query_pkey = vrnic_query_pkey,
	.query_gid = vrnic_query_gid,
	.alloc_ucontext = vrnic_alloc_ucontext,
	.dealloc_ucontext = vrnic_dealloc_ucontext,
	.mmap = vrnic_mmap,
	.mmap_free = vrnic_mmap_free,
	.alloc_pd = vrnic_alloc_pd,
	.dealloc_pd = vrnic_dealloc_pd,
	.create_cq = vrnic_create_cq,
	.destroy_cq = vrnic_destroy_cq,
	.poll_cq = vrnic_poll_cq,
	.req_notify_cq = vrnic_req_notify_cq,
	.create_qp = vrnic_create_qp,
	.modify_qp = vrnic_modify_qp,
	.destroy_qp = vrnic_destroy_qp,
	.post_send = vrnic_post_send,
	.post_recv = vrnic_post_recv,
	.get_dma_mr = vrnic_get_dma_mr,
	.reg_user_mr = vrnic_reg_user_mr,
	.dereg_mr = vrnic_dereg_mr,

	INIT_RDMA_OBJ_SIZE(ib_ucontext, vrnic_ucontext, ibuc),
	INIT_RDMA_OBJ_SIZE(ib_pd, vrnic_pd, ibpd),
	INIT_RDMA_OBJ_SIZE(ib_cq, vrnic_cq, ibcq),
	INIT_RDMA_OBJ_SIZE(ib_qp, vrnic_qp, ibqp),
};

/* Kept apart so bug=no-disassociate can leave it out (then removal waits for every user). */
static const struct ib_device_ops vrnic_disassociate_ops = {
	.disassociate_ucontext = vrnic_disassociate_ucontext,
};

/* ---- PCI ----------------------------------------------------------------------------------- */

static void vrnic_free_queues(struct vrnic_dev *dev)
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

static int vrnic_alloc_queues(struct vrnic_dev *dev)
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
static void vrnic_hw_reset(struct vrnic_dev *dev)
{
	if (vrnic_check_gone(dev))
		return;
	vrnic_write(dev, VRNIC_REG_CTRL, VRNIC_CTRL_RESET);
	if (vrnic_wait_ready(dev, false) == -ETIMEDOUT)
		dev_warn(&dev->pdev->dev, "device still ready %d ms after reset\n", VRNIC_READY_TIMEOUT_MS);
}

static int vrnic_hw_enable(struct vrnic_dev *dev)
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

static int vrnic_setup_irqs(struct vrnic_dev *dev)
{
	struct pci_dev *pdev = dev->pdev;
	u32 want = vrnic_read(dev, VRNIC_REG_NUM_VECTORS);
	int nvec, ret;

	if (want == VRNIC_REG_GONE)
		return -ENODEV;
	want = clamp_t(u32, want, 2, 64);
	/* MSI-X, else MSI, else INTx: whichever the device offers. */
	nvec = pci_alloc_irq_vectors(pdev, 1, want, PCI_IRQ_ALL_TYPES);
	if (nvec < 0) {
		/* Admin commands still work by polling; events are not delivered. */
		dev_warn(&pdev->dev, "no interrupt (%d): admin queue by polling, no events\n",
			 nvec);
		dev->num_vectors = 0;
		return 0;
	}
	dev->num_vectors = nvec;
	if (nvec == 1) {
		ret = request_threaded_irq(pci_irq_vector(pdev, 0), vrnic_irq, vrnic_event_thread,
					   IRQF_SHARED, DRV_NAME, dev);
		if (ret)
			goto err_vectors;
		return 0;
	}
	ret = request_irq(pci_irq_vector(pdev, VRNIC_VEC_ADMIN), vrnic_admin_irq, 0, "vrnic-admin", dev);
	if (ret)
		goto err_vectors;
	ret = request_threaded_irq(pci_irq_vector(pdev, VRNIC_VEC_EVENT), NULL, vrnic_event_thread,
				   IRQF_ONESHOT, "vrnic-event", dev);
	if (ret)
		goto err_admin;
	return 0;

err_admin:
	free_irq(pci_irq_vector(pdev, VRNIC_VEC_ADMIN), dev);
err_vectors:
	pci_free_irq_vectors(pdev);
	dev->num_vectors = 0;
	return ret;
}

static const char *vrnic_irq_type(struct vrnic_dev *dev)
{
	struct pci_dev *pdev = dev->pdev;

	if (!dev->num_vectors)
		return "polling";
	if (pdev->msix_enabled)
		return "MSI-X";
	if (pdev->msi_enabled)
		return "MSI";
	return "INTx";
}

static void vrnic_teardown_irqs(struct vrnic_dev *dev)
{
	if (!dev->num_vectors)
		return;
	if (dev->num_vectors > 1)
		free_irq(pci_irq_vector(dev->pdev, VRNIC_VEC_EVENT), dev);
	free_irq(pci_irq_vector(dev->pdev, VRNIC_VEC_ADMIN), dev);
	pci_free_irq_vectors(dev->pdev);
	dev->num_vectors = 0;
}

static int vrnic_read_caps(struct vrnic_dev *dev)
{
	struct vrnic_hw_device_attr hw;
	int ret;

	dev->caps.max_pd = vrnic_read(dev, VRNIC_REG_MAX_PD);
	dev->caps.max_cq = vrnic_read(dev, VRNIC_REG_MAX_CQ);
	dev->caps.max_qp = vrnic_read(dev, VRNIC_REG_MAX_QP);
	dev->caps.max_mr = vrnic_read(dev, VRNIC_REG_MAX_MR);
	dev->caps.max_cqe = vrnic_read(dev, VRNIC_REG_MAX_CQE);
	dev->caps.max_qp_wr = vrnic_read(dev, VRNIC_REG_MAX_QP_WR);
	dev->caps.max_sge = 1;
	dev->caps.max_mr_size = U32_MAX;
	dev->caps.node_guid = 0x020000fffe000000ULL | pci_dev_id(dev->pdev);
	dev->caps.sys_image_guid = dev->caps.node_guid;

	ret = vrnic_admin_query(dev, VRNIC_ADMIN_QUERY_DEVICE, 0, &hw, sizeof(hw));
	if (ret)
		return ret;
	dev->caps.fw_version = le32_to_cpu(hw.if_version);
	if (hw.node_guid)
		dev->caps.node_guid = le64_to_cpu(hw.node_guid);
	dev->caps.sys_image_guid = dev->caps.node_guid;
	if (hw.max_mr_size)
		dev->caps.max_mr_size = le64_to_cpu(hw.max_mr_size);
	if (hw.max_sge)
		dev->caps.max_sge = le32_to_cpu(hw.max_sge);
	/* Registers and QUERY_DEVICE must agree; the smaller value is the safe one. */
	dev->caps.max_pd = min(dev->caps.max_pd, le32_to_cpu(hw.max_pd));
	dev->caps.max_cq = min(dev->caps.max_cq, le32_to_cpu(hw.max_cq));
	dev->caps.max_qp = min(dev->caps.max_qp, le32_to_cpu(hw.max_qp));
	dev->caps.max_mr = min(dev->caps.max_mr, le32_to_cpu(hw.max_mr));
	dev->caps.max_cqe = min(dev->caps.max_cqe, le32_to_cpu(hw.max_cqe));
	dev->caps.max_qp_wr = min(dev->caps.max_qp_wr, le32_to_cpu(hw.max_qp_wr));
	/* The core stores these as int. */
	dev->caps.max_pd = min_t(u32, dev->caps.max_pd, INT_MAX);
	dev->caps.max_cq = min_t(u32, dev->caps.max_cq, INT_MAX);
	dev->caps.max_qp = min_t(u32, dev->caps.max_qp, INT_MAX);
	dev->caps.max_mr = min_t(u32, dev->caps.max_mr, INT_MAX);
	dev->caps.max_cqe = min_t(u32, dev->caps.max_cqe, INT_MAX);
	dev->caps.max_qp_wr = min_t(u32, dev->caps.max_qp_wr, INT_MAX);
	dev->caps.max_sge = min_t(u32, dev->caps.max_sge, INT_MAX);
	return 0;
}

static int vrnic_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	struct vrnic_dev *dev;
	u32 version, magic;
	int ret;

	VRNIC_STATIC_ASSERTS();
	dev = ib_alloc_device(vrnic_dev, ibdev);
	if (!dev)
		return -ENOMEM;
	dev->pdev = pdev;
	mutex_init(&dev->admin_lock);
	spin_lock_init(&dev->acq_lock);
	init_completion(&dev->admin_done);
	pci_set_drvdata(pdev, dev);

	ret = pci_enable_device_mem(pdev);
	if (ret)
		goto err_dealloc;
	ret = pci_request_regions(pdev, DRV_NAME);
	if (ret)
		goto err_disable;
	pci_set_master(pdev);
	ret = dma_set_mask_and_coherent(&pdev->dev, DMA_BIT_MASK(64));
	if (ret)
		goto err_regions;

	if (pci_resource_len(pdev, VRNIC_BAR_REGS) < 0x1000 ||
	    pci_resource_len(pdev, VRNIC_BAR_UAR) < VRNIC_UAR_PAGE_SIZE) {
		dev_err(&pdev->dev, "BAR0 or BAR2 too small\n");
		ret = -ENODEV;
		goto err_regions;
	}
	dev->regs = pci_iomap(pdev, VRNIC_BAR_REGS, 0x1000);
	if (!dev->regs) {
		ret = -ENOMEM;
		goto err_regions;
	}
	dev->uar_phys = pci_resource_start(pdev, VRNIC_BAR_UAR);
	dev->uar_len = pci_resource_len(pdev, VRNIC_BAR_UAR);

	version = vrnic_read(dev, VRNIC_REG_VERSION);
	magic = vrnic_read(dev, VRNIC_REG_MAGIC);
	if (magic != VRNIC_MAGIC || VRNIC_VERSION_MAJOR(version) != VRNIC_VERSION_MAJOR_SUPPORTED) {
		dev_err(&pdev->dev, "not a vrnic v1 device (magic 0x%08x version 0x%08x)\n", magic, version);
		ret = -ENODEV;
		goto err_unmap;
	}
	dev->num_uars = vrnic_read(dev, VRNIC_REG_NUM_UARS);
	dev->num_ports = vrnic_read(dev, VRNIC_REG_NUM_PORTS);
	/* BAR2 must hold every UAR page the device claims, or a user mapping could run past it. */
	if (!dev->num_uars || dev->num_uars > dev->uar_len / VRNIC_UAR_PAGE_SIZE || dev->num_ports != 1) {
		dev_err(&pdev->dev, "bad geometry: %u UAR pages in a %llu-byte BAR2, %u ports\n",
			dev->num_uars, (unsigned long long)dev->uar_len, dev->num_ports);
		ret = -ENODEV;
		goto err_unmap;
	}

	vrnic_hw_reset(dev);
	ret = vrnic_alloc_queues(dev);
	if (ret)
		goto err_unmap;
	ret = vrnic_setup_irqs(dev);
	if (ret)
		goto err_queues;
	ret = vrnic_hw_enable(dev);
	if (ret) {
		dev_err(&pdev->dev, "device did not become ready: %d\n", ret);
		goto err_irqs;
	}
	ret = vrnic_read_caps(dev);
	if (ret) {
		dev_err(&pdev->dev, "QUERY_DEVICE failed: %d\n", ret);
		goto err_reset;
	}
	ret = vrnic_admin_query(dev, VRNIC_ADMIN_QUERY_PORT, 1, &dev->port_cache, sizeof(dev->port_cache));
	if (ret) {
		dev_err(&pdev->dev, "QUERY_PORT failed: %d\n", ret);
		goto err_reset;
	}

	dev->ibdev.node_type = RDMA_NODE_IB_CA;
	dev->ibdev.phys_port_cnt = 1;
	dev->ibdev.num_comp_vectors = dev->num_vectors > VRNIC_VEC_FIRST_COMP ?
				      dev->num_vectors - VRNIC_VEC_FIRST_COMP : 1;
	dev->ibdev.node_guid = cpu_to_be64(dev->caps.node_guid);
	dev->ibdev.dev.parent = &pdev->dev;
	strscpy(dev->ibdev.node_desc, "vrnic", sizeof(dev->ibdev.node_desc));
	ib_set_device_ops(&dev->ibdev, &vrnic_dev_ops);
	if (vrnic_bug != VRNIC_BUG_NO_DISASSOCIATE)
		ib_set_device_ops(&dev->ibdev, &vrnic_disassociate_ops);

	ret = ib_register_device(&dev->ibdev, "vrnic%d", &pdev->dev);
	if (ret) {
		dev_err(&pdev->dev, "ib_register_device failed: %d\n", ret);
		goto err_reset;
	}
	dev->registered = true;
	dev_info(&pdev->dev, "%s: version 0x%08x, %u UAR pages at %pa, %u vectors, %s, bug=%s\n",
		 dev_name(&dev->ibdev.dev), version, dev->num_uars, &dev->uar_phys,
		 dev->num_vectors, vrnic_irq_type(dev), bug);
	return 0;

err_reset:
	vrnic_hw_reset(dev);
err_irqs:
	vrnic_teardown_irqs(dev);
err_queues:
	vrnic_free_queues(dev);
err_unmap:
	pci_iounmap(pdev, dev->regs);
err_regions:
	pci_release_regions(pdev);
err_disable:
	pci_disable_device(pdev);
err_dealloc:
	ib_dealloc_device(&dev->ibdev);
	return ret;
}

static void vrnic_remove(struct pci_dev *pdev)
{
	struct vrnic_dev *dev = pci_get_drvdata(pdev);
	ktime_t start = ktime_get();

	/*
	 * ib_unregister_device destroys every user object (QP, CQ, MR, PD: our destroy paths), then
	 * zaps the user mappings, disassociates and deallocates the contexts. No register access
	 * here first: on a vanished device even the read that tells us so can be slow (under QEMU
	 * each trapped access to a dead vfio-user server waits for a reply timeout, ~5 s), and it
	 * would delay the zap. The first admin command finds out; after one all-ones read no other
	 * access is made.
	 */
	dev_info(&pdev->dev, "remove: start\n");
	dev->registered = false;
	ib_unregister_device(&dev->ibdev);
	vrnic_hw_reset(dev);
	/*
	 * Whether config space is touched again (MSI-X teardown, disable) is the PCI core's call:
	 * it skips those accesses for a function it marked disconnected (pciehp on a surprise
	 * removal) or offline (AER, DPC). The driver reads that state and never writes it.
	 */
	vrnic_teardown_irqs(dev);
	vrnic_free_queues(dev);
	pci_iounmap(pdev, dev->regs);
	pci_release_regions(pdev);
	pci_disable_device(pdev);
	dev_info(&pdev->dev, "remove: done in %lld ms (device %s)\n",
		 ktime_ms_delta(ktime_get(), start), READ_ONCE(dev->gone) ? "gone" : "present");
	ib_dealloc_device(&dev->ibdev);
}

static const struct pci_device_id vrnic_pci_ids[] = {
	{ PCI_DEVICE(VRNIC_PCI_VENDOR_ID, VRNIC_PCI_DEVICE_ID) },
	{ }
};
MODULE_DEVICE_TABLE(pci, vrnic_pci_ids);

static struct pci_driver vrnic_pci_driver = {
	.name = DRV_NAME,
	.id_table = vrnic_pci_ids,
	.probe = vrnic_probe,
	.remove = vrnic_remove,
};

static int __init vrnic_init(void)
{
	if (!bug || !*bug || !strcmp(bug, "none")) {
		vrnic_bug = VRNIC_BUG_NONE;
	} else if (!strcmp(bug, "legacy-mmap")) {
		vrnic_bug = VRNIC_BUG_LEGACY_MMAP;
	} else if (!strcmp(bug, "no-disassociate")) {
		vrnic_bug = VRNIC_BUG_NO_DISASSOCIATE;
	} else if (!strcmp(bug, "private-tracking")) {
		vrnic_bug = VRNIC_BUG_PRIVATE_TRACKING;
	} else {
		pr_err(DRV_NAME ": unknown bug=%s (none, legacy-mmap, no-disassociate, private-tracking)\n",
		       bug);
		return -EINVAL;
	}
	if (vrnic_bug != VRNIC_BUG_NONE)
		pr_warn(DRV_NAME ": planted bug %s is active (negative control)\n", bug);
	return pci_register_driver(&vrnic_pci_driver);
}

static void __exit vrnic_exit(void)
{
	pci_unregister_driver(&vrnic_pci_driver);
}

module_init(vrnic_init);
module_exit(vrnic_exit);

MODULE_AUTHOR("vrnic project");
MODULE_DESCRIPTION("Reference driver for the vrnic emulated RDMA NIC");
MODULE_LICENSE("GPL");
