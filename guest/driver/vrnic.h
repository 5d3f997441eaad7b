/* SPDX-License-Identifier: GPL-2.0 */
/* vrnic.h: the driver's per-device and per-object state, shared by main, com and verbs. */
#ifndef VRNIC_H
#define VRNIC_H

#include <linux/completion.h>
#include <linux/list.h>
#include <linux/mutex.h>
#include <linux/pci.h>
#include <linux/spinlock.h>
#include <linux/types.h>
#include <linux/xarray.h>
#include <rdma/ib_verbs.h>

#include "vrnic-hw.h"

#define DRV_NAME "vrnic"

enum vrnic_bug {
	VRNIC_BUG_NONE,
	VRNIC_BUG_LEGACY_MMAP,
	VRNIC_BUG_NO_DISASSOCIATE,
	VRNIC_BUG_PRIVATE_TRACKING,
	VRNIC_BUG_ZAP_SIGBUS,
	VRNIC_BUG_DESTROY_ERROR,
	VRNIC_BUG_HELD_REFERENCE,
};

extern enum vrnic_bug vrnic_bug;

/* Both track user mappings in the driver's own list and zap them themselves. */
static inline bool vrnic_bug_private_list(void)
{
	return vrnic_bug == VRNIC_BUG_PRIVATE_TRACKING || vrnic_bug == VRNIC_BUG_ZAP_SIGBUS;
}

#define VRNIC_ASQ_ENTRIES	64
#define VRNIC_ACQ_ENTRIES	64
#define VRNIC_EQ_ENTRIES	64
/* How long enable and reset may take before we give up on the device. */
#define VRNIC_READY_TIMEOUT_MS	3000
/* Interrupt sources the driver serves at most: admin, event and up to 62 completion vectors. */
#define VRNIC_MAX_VECTORS	64

struct vrnic_dev;

/* The handler data of one completion vector: which CQs it serves is their comp_vector. */
struct vrnic_comp_vec {
	struct vrnic_dev *dev;
	u32 index;		/* comp_vector as the CQs name it */
};

/*
 * Memory the device may still write: a DMA buffer or pinned user pages whose command timed out
 * or whose DESTROY failed. It is freed only once the device can no longer write it (a reset it
 * confirmed, or bus mastering off in remove); until then it is "parked".
 */
struct vrnic_parked {
	struct list_head list;
	void *va;		/* coherent buffer, or NULL */
	dma_addr_t dma;
	size_t size;
	struct ib_umem *umem;	/* pinned user pages, or NULL */
};

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
	/* ACQ consumer state; taken by the vector 0 handler and the poller */
	spinlock_t acq_lock;
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
	bool admin_broken;	/* a command timed out: the device was reset and takes no more */
	/* Set once the device can no longer write memory: a reset it confirmed, or remove. */
	bool dma_stopped;
	spinlock_t parked_lock;	/* protects parked */
	struct list_head parked;

	/* Live CQs and QPs by number, for events and completions that name them. */
	struct xarray cqs;
	struct xarray qps;
	struct vrnic_comp_vec comp_vecs[VRNIC_MAX_VECTORS - VRNIC_VEC_FIRST_COMP];
	/* BAR2 as the kernel sees it: the arm words of the CQs, read on a completion interrupt. */
	void __iomem *uar;

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
	spinlock_t port_lock;	/* protects port_cache */
	struct vrnic_hw_port_attr port_cache;
	/* Between ib_register_device and ib_unregister_device; read by the event thread. */
	bool registered;
};

struct vrnic_ucontext {
	struct ib_ucontext ibuc;
	u32 uar_index;
	u32 num_uars;
	struct rdma_user_mmap_entry *uar_entry;

	/* bug=private-tracking and zap-sigbus: the mappings mmap made, tracked the pre-4.20 way. */
	struct mutex vmas_lock;
	struct list_head vmas;
	struct mm_struct *owner_mm;	/* the creating process's address space (mmgrab) */
	struct page *dummy;		/* what the zapped mappings get instead of the BAR */
};

/* One mapping as the private list remembers it: only what mmap saw, never told of copies. */
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
	u32 entries;
	u32 comp_vector;
	u32 arm_offset;		/* the CQ's arm word in BAR2 */
	u32 notified_arm;	/* the arm word a completion event was last delivered for */
};

struct vrnic_qp {
	struct ib_qp ibqp;
	u32 qpn;
	/* The state the device last accepted (ERR after QP_FATAL): MODIFY_QP always names one. */
	enum ib_qp_state state;
	u32 sq_entries;
	u32 rq_entries;
	u32 max_send_sge;
	u32 max_recv_sge;
	int access_flags;
	u32 dest_qpn;
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

static inline struct vrnic_cq *to_vcq(struct ib_cq *ibcq)
{
	return container_of(ibcq, struct vrnic_cq, ibcq);
}

static inline struct vrnic_ucontext *to_vuc(struct ib_ucontext *uc)
{
	return container_of(uc, struct vrnic_ucontext, ibuc);
}

extern const struct ib_device_ops vrnic_dev_ops;
extern const struct ib_device_ops vrnic_disassociate_ops;

void vrnic_cq_completion(struct vrnic_dev *dev, struct vrnic_cq *cq);
void vrnic_comp_vector(struct vrnic_dev *dev, u32 index);

#endif /* VRNIC_H */
