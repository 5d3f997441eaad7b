/* SPDX-License-Identifier: (GPL-2.0 OR MIT) */
/* vrnic-abi.h: the driver data vrnic's uverbs commands carry (udata), shared with user space. */
#ifndef VRNIC_ABI_H
#define VRNIC_ABI_H

#include <linux/types.h>

#define VRNIC_UVERBS_ABI_VERSION 1

/* A context asks for up to this many consecutive UAR pages (the device's ALLOC_UAR limit). */
#define VRNIC_MAX_UARS_PER_CONTEXT 8

/* GET_CONTEXT driver input; absent or num_uars == 0 means one page. */
struct vrnic_alloc_ucontext_req {
	__u32 num_uars;
	__u32 reserved;
};

/* GET_CONTEXT driver output. */
struct vrnic_alloc_ucontext_resp {
	__u32 abi_version;
	__u32 num_uars;		/* pages in this context's UAR run */
	__u32 uar_index;	/* first UAR page index inside BAR2 */
	__u32 uar_page_size;
	/* mmap() offset of the whole run (map exactly num_uars pages) */
	__aligned_u64 uar_mmap_offset;
	__u32 driver_flags;	/* VRNIC_DRIVER_FLAG_* : the planted bug the driver runs with */
	__u32 reserved;
};

/* Plain constants: user space has no BIT(). */
#define VRNIC_DRIVER_FLAG_LEGACY_MMAP		0x1u
#define VRNIC_DRIVER_FLAG_NO_DISASSOCIATE	0x2u
#define VRNIC_DRIVER_FLAG_PRIVATE_TRACKING	0x4u
#define VRNIC_DRIVER_FLAG_ZAP_SIGBUS		0x8u
#define VRNIC_DRIVER_FLAG_DESTROY_ERROR		0x10u
#define VRNIC_DRIVER_FLAG_HELD_REFERENCE	0x20u

/* ALLOC_PD driver output. */
struct vrnic_alloc_pd_resp {
	__u32 pdn;
	__u32 reserved;
};

/*
 * User CQs and QPs: the rings live in user memory the driver pins. The device takes one
 * contiguous ring, so each ring must be one page-aligned page (CQ: up to 128 entries of 32
 * bytes; SQ/RQ: up to 64 WQEs of 64 bytes). Doorbells go to the context's first UAR page at the
 * slot the device chose (section 7 of docs/device.md).
 */
#define VRNIC_USER_RING_BYTES 4096

/* CREATE_CQ driver input / output. */
struct vrnic_create_cq_req {
	__aligned_u64 buf_addr;
};

struct vrnic_create_cq_resp {
	__u32 cqn;
	__u32 doorbell_offset;	/* the CQ's slot in UAR page uar_index (arm word at +4) */
	__u32 uar_index;
	__u32 entries;
};

/* CREATE_QP driver input / output (rq_addr ignored when max_recv_wr is 0). */
struct vrnic_create_qp_req {
	__aligned_u64 sq_addr;
	__aligned_u64 rq_addr;
};

struct vrnic_create_qp_resp {
	__u32 qpn;
	__u32 doorbell_offset;	/* SQ doorbell; RQ doorbell at +4 */
	__u32 uar_index;
	__u32 sq_entries;
	__u32 rq_entries;
	__u32 reserved;
};

/* The PCI function user space looks for in sysfs (and the driver binds to). */
#define VRNIC_PCI_VENDOR_ID	0x1234
#define VRNIC_PCI_DEVICE_ID	0x7a01

/*
 * A UAR page as user space sees it through the mmap (docs/device.md section 7): 8-byte doorbell
 * slots below VRNIC_UAR_DOORBELL_END, even slots for QPs and odd slots for CQs; the device
 * ignores the rest of the page, so software may keep words of its own there.
 */
#define VRNIC_UAR_PAGE_SIZE	4096
#define VRNIC_UAR_DOORBELL_END	0x800
#define VRNIC_UAR_SCRATCH	0x800
#define VRNIC_UAR_SLOT_BYTES	8

/*
 * Doorbell words: a QP slot holds the SQ doorbell at +0 and the RQ doorbell at +4, a CQ slot
 * the CQ doorbell at +0 and the arm word at +4. Each doorbell is the object's number in the
 * high half and a 16-bit free-running index in the low half.
 */
#define VRNIC_DB_RQ_OFFSET	4
#define VRNIC_DB_ARM_OFFSET	4
#define VRNIC_DB_HANDLE_SHIFT	16
#define VRNIC_DB_INDEX_MASK	0xffffu
/* The arm word: ARM, an arm sequence number from bit 16 up, the consumer index below. */
#define VRNIC_DB_ARM		0x80000000u
#define VRNIC_DB_ARM_SEQ_SHIFT	16
#define VRNIC_DB(handle, index) \
	(((__u32)(handle) << VRNIC_DB_HANDLE_SHIFT) | ((__u32)(index) & VRNIC_DB_INDEX_MASK))

/* Send WQE (docs/device.md 7.1): the header, then RDMA's remote address and SGE 0. */
#define VRNIC_WQE_BYTES		64
#define VRNIC_WQE_OPCODE	0x00	/* u8 */
#define VRNIC_WQE_NUM_SGE	0x02	/* u8 */
#define VRNIC_WQE_WR_ID		0x08	/* u64 */
#define VRNIC_WQE_REMOTE_ADDR	0x10	/* u64 */
#define VRNIC_WQE_RKEY		0x18	/* u32 */
#define VRNIC_WQE_SGE0		0x20	/* send WQE; a receive WQE's SGE 0 is at 0x10 */
#define VRNIC_RECV_WQE_SGE0	0x10
#define VRNIC_SGE_ADDR		0x00	/* u64, inside an SGE */
#define VRNIC_SGE_LENGTH	0x08	/* u32 */
#define VRNIC_SGE_LKEY		0x0c	/* u32 */

enum vrnic_wqe_opcode {
	VRNIC_WQE_OP_NOP = 0,
	VRNIC_WQE_OP_SEND = 1,
	VRNIC_WQE_OP_RDMA_WRITE = 3,
	VRNIC_WQE_OP_RDMA_READ = 5,
};

/* Completion queue entry (docs/device.md 7.3); the device writes the flags word last. */
#define VRNIC_CQE_BYTES		32
#define VRNIC_CQE_WR_ID		0x00	/* u64 */
#define VRNIC_CQE_QPN		0x08	/* u32 */
#define VRNIC_CQE_BYTE_LEN	0x0c	/* u32 */
#define VRNIC_CQE_OPCODE	0x10	/* u8 */
#define VRNIC_CQE_STATUS	0x11	/* u8: 0 is OK */
#define VRNIC_CQE_FLAGS_WORD	0x1c	/* u32 */
/* Every completion entry the device writes (user, admin, event) has its phase in bit 0. */
#define VRNIC_CQE_PHASE		0x1u
#define VRNIC_CQE_SEND		0x2u	/* the entry completes a send queue WQE */

#endif /* VRNIC_ABI_H */
