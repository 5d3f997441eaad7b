/* SPDX-License-Identifier: (GPL-2.0 OR MIT) */
/* vrnic-abi.h: the driver data vrnic's uverbs commands carry (udata), shared by the driver and user space. */
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
	__aligned_u64 uar_mmap_offset; /* mmap() offset of the whole run (map exactly num_uars pages) */
	__u32 driver_flags;	/* VRNIC_DRIVER_FLAG_* : the planted bug the driver runs with */
	__u32 reserved;
};

#define VRNIC_DRIVER_FLAG_LEGACY_MMAP		(1u << 0)
#define VRNIC_DRIVER_FLAG_NO_DISASSOCIATE	(1u << 1)

/* ALLOC_PD driver output. */
struct vrnic_alloc_pd_resp {
	__u32 pdn;
	__u32 reserved;
};

#endif /* VRNIC_ABI_H */
