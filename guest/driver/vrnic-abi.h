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

#endif /* VRNIC_ABI_H */
