/* SPDX-License-Identifier: GPL-2.0 */
/* vrnic-hw.h: the vrnic device's register and queue layouts as docs/device.md defines them. */
#ifndef VRNIC_HW_H
#define VRNIC_HW_H

#include <linux/bits.h>
#include <linux/build_bug.h>
#include <linux/compiler_attributes.h>
#include <linux/types.h>

#include "vrnic-abi.h"

/* The PCI IDs, the UAR page layout and the user ring entries are in vrnic-abi.h. */

#define VRNIC_BAR_REGS		0
#define VRNIC_BAR_UAR		2

/* BAR0 registers, 32-bit accesses. */
#define VRNIC_REG_VERSION	0x000
#define VRNIC_REG_MAGIC		0x004
#define VRNIC_REG_NUM_UARS	0x008
#define VRNIC_REG_NUM_PORTS	0x00c
#define VRNIC_REG_MAX_PD	0x010
#define VRNIC_REG_MAX_CQ	0x014
#define VRNIC_REG_MAX_QP	0x018
#define VRNIC_REG_MAX_MR	0x01c
#define VRNIC_REG_MAX_CQE	0x020
#define VRNIC_REG_MAX_QP_WR	0x024
#define VRNIC_REG_NUM_VECTORS	0x028
#define VRNIC_REG_CTRL		0x040
#define VRNIC_REG_STATUS	0x044
#define VRNIC_REG_FATAL_CODE	0x048
#define VRNIC_REG_INT_CAUSE	0x04c
#define VRNIC_REG_ASQ_BASE_LO	0x080
#define VRNIC_REG_ASQ_BASE_HI	0x084
#define VRNIC_REG_ASQ_SIZE	0x088
#define VRNIC_REG_ASQ_TAIL	0x08c
#define VRNIC_REG_ASQ_HEAD	0x090
#define VRNIC_REG_ACQ_BASE_LO	0x0a0
#define VRNIC_REG_ACQ_BASE_HI	0x0a4
#define VRNIC_REG_ACQ_SIZE	0x0a8
#define VRNIC_REG_ACQ_HEAD	0x0ac
#define VRNIC_REG_EQ_BASE_LO	0x0c0
#define VRNIC_REG_EQ_BASE_HI	0x0c4
#define VRNIC_REG_EQ_SIZE	0x0c8
#define VRNIC_REG_EQ_HEAD	0x0cc

#define VRNIC_MAGIC		0x43494e56 /* "VNIC" */
#define VRNIC_VERSION_MAJOR(v)	((v) >> 16)
#define VRNIC_VERSION_MAJOR_SUPPORTED 1

#define VRNIC_CTRL_ENABLE	BIT(0)
#define VRNIC_CTRL_RESET	BIT(1)
#define VRNIC_STATUS_READY	BIT(0)
#define VRNIC_STATUS_FATAL	BIT(1)

/* INT_CAUSE: which sources raised an interrupt; write 1 to clear. */
#define VRNIC_INT_ADMIN		BIT(0)
#define VRNIC_INT_EVENT		BIT(1)
#define VRNIC_INT_COMPLETION	BIT(2)

/* What a read of a register returns once the device has left the bus. */
#define VRNIC_REG_GONE		0xffffffffu

/* Interrupt vectors. */
#define VRNIC_VEC_ADMIN		0
#define VRNIC_VEC_EVENT		1
#define VRNIC_VEC_FIRST_COMP	2

/* Admin opcodes. */
enum vrnic_admin_opcode {
	VRNIC_ADMIN_QUERY_DEVICE = 0x01,
	VRNIC_ADMIN_QUERY_PORT = 0x02,
	VRNIC_ADMIN_ALLOC_UAR = 0x03,
	VRNIC_ADMIN_FREE_UAR = 0x04,
	VRNIC_ADMIN_CREATE_PD = 0x05,
	VRNIC_ADMIN_DESTROY_PD = 0x06,
	VRNIC_ADMIN_CREATE_CQ = 0x07,
	VRNIC_ADMIN_DESTROY_CQ = 0x08,
	VRNIC_ADMIN_CREATE_QP = 0x09,
	VRNIC_ADMIN_MODIFY_QP = 0x0a,
	VRNIC_ADMIN_DESTROY_QP = 0x0b,
	VRNIC_ADMIN_REG_MR = 0x0c,
	VRNIC_ADMIN_DEREG_MR = 0x0d,
};

/* Admin completion status. */
enum vrnic_admin_status {
	VRNIC_STATUS_OK = 0,
	VRNIC_STATUS_BAD_OPCODE = 1,
	VRNIC_STATUS_BAD_PARAM = 2,
	VRNIC_STATUS_BAD_ADDRESS = 3,
	VRNIC_STATUS_NO_RESOURCES = 4,
	VRNIC_STATUS_BAD_HANDLE = 5,
	VRNIC_STATUS_IN_USE = 6,
	VRNIC_STATUS_BAD_STATE = 7,
};

/* Admin submission entry: 64 bytes; words 0x08.. are command specific. */
struct vrnic_asqe {
	u8 opcode;
	u8 flags;
	__le16 reserved;
	__le32 cmd_id;
	union {
		__le32 dw[14];
		struct {
			__le64 addr;
			__le32 len;
			__le32 port;	/* QUERY_PORT only */
		} query;		/* QUERY_DEVICE, QUERY_PORT */
		struct {
			__le32 count;
		} alloc_uar;
		struct {
			__le32 index;
		} free_uar;
		struct {
			__le32 handle;
		} destroy;		/* DESTROY_PD/CQ/QP, DEREG_MR */
		struct {
			__le64 buf_addr;
			__le32 entries;
			__le32 comp_vector;
			__le32 uar_index;
		} create_cq;
		struct {
			__le32 pdn;
			__le32 send_cqn;
			__le32 recv_cqn;
			__le32 uar_index;
			__le64 sq_addr;
			__le64 rq_addr;
			__le32 sq_entries;
			__le32 rq_entries;
			__le32 qp_type;
		} create_qp;
		struct {
			__le32 qpn;
			__le32 state;
			__le32 attr_mask;	/* IB_QP_* bits of the fields below */
			__le32 access_flags;
			__le32 qkey;
			__le32 dest_qpn;
			__le32 rq_psn;
			__le32 sq_psn;
			__le16 dlid;
			u8 port_num;
			u8 path_mtu;
			u8 timeout;
			u8 retry_cnt;
			u8 rnr_retry;
			u8 min_rnr_timer;
			__le16 pkey_index;
		} modify_qp;
		struct {
			__le32 pdn;
			__le32 access;
			__le64 iova;
			__le64 length;
			__le64 addr;	/* contiguous: the first byte; page list: the list */
			__le32 page_count;
			__le32 page_shift;
		} reg_mr;
	};
} __packed;
static_assert(sizeof(struct vrnic_asqe) == 64);

/* Admin completion entry: 16 bytes. */
struct vrnic_acqe {
	__le32 cmd_id;
	__le16 status;
	__le16 flags;
	__le32 result0;
	__le32 result1;
} __packed;
static_assert(sizeof(struct vrnic_acqe) == 16);

#define VRNIC_REG_MR_FLAG_PAGE_LIST	BIT(0)
#define VRNIC_MR_ACCESS_MASK	(BIT(0) | BIT(1) | BIT(2) | BIT(3))
#define VRNIC_MAX_MR_PAGES	65536

/* Event queue entry: 16 bytes. */
struct vrnic_eqe {
	__le16 type;
	__le16 flags;
	__le32 data0;
	__le32 data1;
	__le32 reserved;
} __packed;
static_assert(sizeof(struct vrnic_eqe) == 16);

enum vrnic_event_type {
	VRNIC_EVENT_PORT_STATE_CHANGE = 1,
	VRNIC_EVENT_FATAL_ERROR = 2,
	VRNIC_EVENT_CQ_ERROR = 3,
	VRNIC_EVENT_QP_FATAL = 4,
};

/* QUERY_DEVICE output buffer (128 bytes, docs/device.md 5.5). */
struct vrnic_hw_device_attr {
	__le32 if_version;
	__le32 vendor_id;
	__le32 device_id;
	__le32 hw_rev;
	__le64 node_guid;
	__le64 max_mr_size;
	__le64 page_size_cap;
	__le32 num_uars;
	__le32 num_ports;
	__le32 max_pd;
	__le32 max_cq;
	__le32 max_qp;
	__le32 max_mr;
	__le32 max_cqe;
	__le32 max_qp_wr;
	__le32 max_sge;
	__le32 num_comp_vectors;
	__le32 max_uars_per_alloc;
	__le32 max_mr_pages;
	u8 reserved[0x28];
} __packed;
static_assert(sizeof(struct vrnic_hw_device_attr) == 128);

/* QUERY_PORT output buffer (64 bytes); enum values are Linux's ib_verbs.h ones. */
struct vrnic_hw_port_attr {
	__le32 state;
	__le32 phys_state;
	__le32 max_mtu;
	__le32 active_mtu;
	__le32 lid;
	__le32 sm_lid;
	__le32 gid_tbl_len;
	__le32 pkey_tbl_len;
	__le32 active_width;
	__le32 active_speed;
	__le32 link_layer;
	__le32 max_msg_sz;
	u8 gid0[16];		/* network order */
} __packed;
static_assert(sizeof(struct vrnic_hw_port_attr) == 64);

#endif /* VRNIC_HW_H */
