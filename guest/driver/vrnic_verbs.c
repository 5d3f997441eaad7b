// SPDX-License-Identifier: GPL-2.0
/*
 * vrnic_verbs.c: the RDMA verbs (ib_device_ops) of the vrnic driver, and how user mappings of
 * UAR pages are made so that a hot unplug zaps them. Three planted bugs live here too.
 */
#include <linux/mm.h>
#include <linux/sched/mm.h>
#include <linux/slab.h>
#include <rdma/ib_umem.h>
#include <rdma/ib_verbs.h>
#include <rdma/iter.h>
#include <rdma/uverbs_ioctl.h>

#include "vrnic.h"
#include "vrnic_com.h"
#include "vrnic-abi.h"

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

const struct ib_device_ops vrnic_dev_ops = {
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
const struct ib_device_ops vrnic_disassociate_ops = {
	.disassociate_ucontext = vrnic_disassociate_ucontext,
};

