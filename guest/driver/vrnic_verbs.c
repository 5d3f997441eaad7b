// SPDX-License-Identifier: GPL-2.0
/*
 * vrnic_verbs.c: the RDMA verbs (ib_device_ops) of the vrnic driver, and how user mappings of
 * UAR pages are made so that a hot unplug zaps them. Four planted bugs live here too.
 */
#include <linux/highmem.h>
#include <linux/mm.h>
#include <linux/overflow.h>
#include <linux/sched/mm.h>
#include <linux/slab.h>
#include <rdma/ib_umem.h>
#include <rdma/ib_verbs.h>
#include <rdma/iter.h>
#include <rdma/uverbs_ioctl.h>

#include "vrnic.h"
#include "vrnic_com.h"
#include "vrnic-abi.h"

/*
 * A UAR page is mapped into user space as one PAGE_SIZE page (rdma_user_mmap_io maps whole
 * pages): with larger pages a mapping would reach the next context's doorbells.
 */
static_assert(PAGE_SIZE == VRNIC_UAR_PAGE_SIZE);

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
	spin_lock(&dev->port_lock);
	if (ret) {
		/* A vanished device is a port that is down, not an error the core must handle. */
		hw = dev->port_cache;
		hw.state = cpu_to_le32(IB_PORT_DOWN);
		hw.phys_state = cpu_to_le32(3);
	} else {
		dev->port_cache = hw;
	}
	spin_unlock(&dev->port_lock);
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

	u8 gid0[16];

	if (index != 0)
		return -EINVAL;
	spin_lock(&dev->port_lock);
	memcpy(gid0, dev->port_cache.gid0, sizeof(gid0));
	spin_unlock(&dev->port_lock);
	if (memchr_inv(gid0, 0, sizeof(gid0))) {
		memcpy(gid->raw, gid0, sizeof(gid->raw));
		return 0;
	}
	gid->global.subnet_prefix = cpu_to_be64(0xfe80000000000000ULL);
	gid->global.interface_id = cpu_to_be64(dev->caps.node_guid);
	return 0;
}

/* What GET_CONTEXT tells user space of the planted bug, indexed by enum vrnic_bug. */
static const u32 vrnic_bug_flags[] = {
	[VRNIC_BUG_NONE] = 0,
	[VRNIC_BUG_LEGACY_MMAP] = VRNIC_DRIVER_FLAG_LEGACY_MMAP,
	[VRNIC_BUG_NO_DISASSOCIATE] = VRNIC_DRIVER_FLAG_NO_DISASSOCIATE,
	[VRNIC_BUG_PRIVATE_TRACKING] = VRNIC_DRIVER_FLAG_PRIVATE_TRACKING,
	[VRNIC_BUG_ZAP_SIGBUS] = VRNIC_DRIVER_FLAG_ZAP_SIGBUS,
	[VRNIC_BUG_DESTROY_ERROR] = VRNIC_DRIVER_FLAG_DESTROY_ERROR,
	[VRNIC_BUG_HELD_REFERENCE] = VRNIC_DRIVER_FLAG_HELD_REFERENCE,
};

static int vrnic_alloc_ucontext(struct ib_ucontext *ibuc, struct ib_udata *udata)
{
	struct vrnic_ucontext *uc = to_vuc(ibuc);
	struct vrnic_dev *dev = to_vdev(ibuc->device);
	struct vrnic_alloc_ucontext_req req = {};
	struct vrnic_alloc_ucontext_resp resp = {};
	struct vrnic_mmap_entry *entry;
	u32 index;
	int ret;

	/* Fields a newer user library knows and this driver does not must be zero. */
	if (udata->inlen > sizeof(req) &&
	    !ib_is_udata_cleared(udata, sizeof(req), udata->inlen - sizeof(req)))
		return -EOPNOTSUPP;
	if (udata->inlen) {
		ret = ib_copy_from_udata(&req, udata, min(udata->inlen, sizeof(req)));
		if (ret)
			return ret;
	}
	if (!req.num_uars)
		req.num_uars = 1;
	if (req.num_uars > VRNIC_MAX_UARS_PER_CONTEXT || req.num_uars > dev->num_uars ||
	    req.reserved)
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
	resp.driver_flags = vrnic_bug_flags[vrnic_bug];
	ret = ib_copy_to_udata(udata, &resp, min(udata->outlen, sizeof(resp)));
	if (ret)
		goto err_remove;
	if (vrnic_bug_private_list()) {
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
 * The planted zap-sigbus bug: private-tracking's own zap, with the driver's own fault handler.
 * mmap fills the whole mapping, so the handler was written for a fault that "cannot happen" and
 * answers VM_FAULT_SIGBUS. After the zap it does happen: the next access kills the process. The
 * core's handler (rdma_umap_fault) gives a zapped mapping a dummy page instead.
 */
static vm_fault_t vrnic_sigbus_fault(struct vm_fault *vmf)
{
	return VM_FAULT_SIGBUS;
}

static const struct vm_operations_struct vrnic_sigbus_vm_ops = {
	.fault = vrnic_sigbus_fault,
};

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
	if (vrnic_bug == VRNIC_BUG_ZAP_SIGBUS)
		vma->vm_ops = &vrnic_sigbus_vm_ops;
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
	 * exists to know that); a page per removed context is what this bug costs. zap-sigbus puts
	 * nothing in the zapped range: its fault handler answers the next access.
	 */
	if (!uc->dummy && vrnic_bug == VRNIC_BUG_PRIVATE_TRACKING)
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

	/* Doorbells are not code: no executable mapping now, and no mprotect to one later. */
	if (vma->vm_flags & VM_EXEC)
		return -EPERM;
	vma->vm_flags &= ~VM_MAYEXEC;
	rdma_entry = rdma_user_mmap_entry_get(ibuc, vma);
	if (!rdma_entry)
		return -EINVAL;
	entry = container_of(rdma_entry, struct vrnic_mmap_entry, rdma);
	if (vrnic_bug == VRNIC_BUG_LEGACY_MMAP)
		ret = vrnic_legacy_mmap(vma, entry);
	else if (vrnic_bug_private_list())
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
	if (vrnic_bug_private_list())
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
	int ret = vrnic_admin_simple(to_vdev(ibpd->device), VRNIC_ADMIN_DESTROY_PD, pd->pdn, 0,
				     NULL);

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

	if (!addr || (addr & ~PAGE_MASK) || !bytes || bytes > VRNIC_USER_RING_BYTES ||
	    bytes > PAGE_SIZE)
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
	if (udata->inlen > sizeof(req) &&
	    !ib_is_udata_cleared(udata, sizeof(req), udata->inlen - sizeof(req)))
		return -EOPNOTSUPP;
	ret = ib_copy_from_udata(&req, udata, sizeof(req));
	if (ret)
		return ret;
	uc = vrnic_uctx(udata);
	if (!uc || !uc->num_uars)
		return -EINVAL;
	entries = roundup_pow_of_two(max_t(u32, attr->cqe, 2));
	if (attr->cqe > VRNIC_USER_RING_BYTES / VRNIC_CQE_BYTES || entries > dev->caps.max_cqe)
		return -EINVAL;
	cq->umem = vrnic_pin_ring(dev, req.buf_addr, entries * VRNIC_CQE_BYTES,
				  IB_ACCESS_LOCAL_WRITE, &dma);
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
	cq->entries = entries;
	cq->comp_vector = attr->comp_vector;
	/* The device's answer is checked like any input: it becomes a BAR2 offset we read. */
	if (le32_to_cpu(cqe.result1) >= VRNIC_UAR_DOORBELL_END || le32_to_cpu(cqe.result1) % 8) {
		ret = -EIO;
		goto err_destroy;
	}
	cq->arm_offset = uc->uar_index * VRNIC_UAR_PAGE_SIZE + le32_to_cpu(cqe.result1) + 4;
	/* An arm word never written reads as not armed: nothing to notify before the first arm. */
	cq->notified_arm = 0;
	ret = xa_insert_irq(&dev->cqs, cq->cqn, cq, GFP_KERNEL);
	if (ret)
		goto err_destroy;
	resp.cqn = cq->cqn;
	resp.doorbell_offset = le32_to_cpu(cqe.result1);
	resp.uar_index = uc->uar_index;
	resp.entries = entries;
	ret = ib_copy_to_udata(udata, &resp, min(udata->outlen, sizeof(resp)));
	if (ret)
		goto err_forget;
	return 0;

err_forget:
	xa_erase_irq(&dev->cqs, cq->cqn);
	vrnic_sync_irqs(dev);
err_destroy:
	vrnic_umem_release_after(dev, cq->umem,
				 vrnic_admin_simple(dev, VRNIC_ADMIN_DESTROY_CQ, cq->cqn, 0, NULL));
	return ret;
err_umem:
	/* A CREATE_CQ that never completed may have made the CQ: its ring stays pinned. */
	vrnic_umem_release_after(dev, cq->umem, ret == -ETIMEDOUT || ret == -EIO ? ret : 0);
	return ret;
}

static int vrnic_destroy_cq(struct ib_cq *ibcq, struct ib_udata *udata)
{
	struct vrnic_cq *cq = container_of(ibcq, struct vrnic_cq, ibcq);
	struct vrnic_dev *dev = to_vdev(ibcq->device);
	int ret;

	/* No completion or event handler may find the CQ once the core frees it. */
	xa_erase_irq(&dev->cqs, cq->cqn);
	vrnic_sync_irqs(dev);
	ret = vrnic_admin_simple(dev, VRNIC_ADMIN_DESTROY_CQ, cq->cqn, 0, NULL);
	if (ret && ret != -ENODEV)
		dev_warn(&dev->pdev->dev, "DESTROY_CQ %u failed: %d\n", cq->cqn, ret);
	/* Only after the device let go of the ring (or is gone) may the pages be unpinned. */
	vrnic_umem_release_after(dev, cq->umem, ret);
	return 0;
}

/*
 * The device raises a CQ's vector when a completion lands in an armed CQ, then disarms it; the
 * interrupt does not say which CQ. A CQ is armed by user space writing its arm word (ARM, a
 * sequence number, and its consumer index then); it has completed once the CQE at that index
 * carries the phase of the current pass over the ring. Each arm is notified once: comp_handler
 * is what ibv_get_cq_event waits for. Runs in interrupt context, on the CQ's one vector.
 */
void vrnic_cq_completion(struct vrnic_dev *dev, struct vrnic_cq *cq)
{
	u32 arm, ci, phase, flags;
	void *ring;

	arm = readl(dev->uar + cq->arm_offset);
	if (!(arm & VRNIC_DB_ARM) || arm == VRNIC_REG_GONE || arm == cq->notified_arm)
		return;
	ci = arm & VRNIC_DB_INDEX_MASK;
	phase = 1 - ((ci / cq->entries) & 1);
	/* The ring is one pinned page (vrnic_pin_ring), so the first page is all of it. */
	ring = kmap_local_page(sg_page(cq->umem->sgt_append.sgt.sgl));
	flags = le32_to_cpu(READ_ONCE(*(__le32 *)(ring + (ci % cq->entries) * VRNIC_CQE_BYTES +
						  VRNIC_CQE_FLAGS_WORD)));
	kunmap_local(ring);
	if ((flags & VRNIC_CQE_PHASE) != phase)
		return;
	cq->notified_arm = arm;
	if (cq->ibcq.comp_handler)
		cq->ibcq.comp_handler(&cq->ibcq, cq->ibcq.cq_context);
}

/* A completion interrupt for comp_vector index, or for every CQ (U32_MAX: one shared vector). */
void vrnic_comp_vector(struct vrnic_dev *dev, u32 index)
{
	struct vrnic_cq *cq;
	unsigned long cqn;

	if (!dev->uar)
		return;
	xa_for_each(&dev->cqs, cqn, cq)
		if (index == U32_MAX || cq->comp_vector == index)
			vrnic_cq_completion(dev, cq);
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
	int ret, ret2 = 0;

	if (!udata)
		return -EOPNOTSUPP;
	/*
	 * UD needs address handles (the device's CREATE_AH) to name a destination; this driver has
	 * no create_ah yet, so a UD QP could send nowhere: refused rather than half supported.
	 */
	if (attr->qp_type != IB_QPT_RC && attr->qp_type != IB_QPT_UC)
		return -EOPNOTSUPP;
	if (attr->srq || attr->create_flags || !attr->send_cq || !attr->recv_cq ||
	    udata->inlen < sizeof(req))
		return -EINVAL;
	if (udata->inlen > sizeof(req) &&
	    !ib_is_udata_cleared(udata, sizeof(req), udata->inlen - sizeof(req)))
		return -EOPNOTSUPP;
	if (attr->cap.max_send_sge > dev->caps.max_sge ||
	    attr->cap.max_recv_sge > dev->caps.max_sge ||
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
		qp->rq_umem = vrnic_pin_ring(dev, req.rq_addr, rq_entries * VRNIC_WQE_BYTES, 0,
					     &rq_dma);
		if (IS_ERR(qp->rq_umem)) {
			ret = PTR_ERR(qp->rq_umem);
			qp->rq_umem = NULL;
			goto err_sq;
		}
	}
	cmd.create_qp.pdn = cpu_to_le32(container_of(ibqp->pd, struct vrnic_pd, ibpd)->pdn);
	cmd.create_qp.send_cqn = cpu_to_le32(to_vcq(attr->send_cq)->cqn);
	cmd.create_qp.recv_cqn = cpu_to_le32(to_vcq(attr->recv_cq)->cqn);
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
	qp->state = IB_QPS_RESET;
	qp->sq_entries = sq_entries;
	qp->rq_entries = rq_entries;
	qp->max_send_sge = attr->cap.max_send_sge;
	qp->max_recv_sge = attr->cap.max_recv_sge;
	ret = xa_insert_irq(&dev->qps, qp->qpn, qp, GFP_KERNEL);
	if (ret)
		goto err_destroy;
	attr->cap.max_send_wr = sq_entries;
	attr->cap.max_recv_wr = rq_entries;
	resp.qpn = qp->qpn;
	resp.doorbell_offset = le32_to_cpu(cqe.result1);
	resp.uar_index = uc->uar_index;
	resp.sq_entries = sq_entries;
	resp.rq_entries = rq_entries;
	ret = ib_copy_to_udata(udata, &resp, min(udata->outlen, sizeof(resp)));
	if (ret)
		goto err_forget;
	return 0;

err_forget:
	xa_erase_irq(&dev->qps, qp->qpn);
	vrnic_sync_irqs(dev);
err_destroy:
	ret2 = vrnic_admin_simple(dev, VRNIC_ADMIN_DESTROY_QP, qp->qpn, 0, NULL);
	vrnic_umem_release_after(dev, qp->rq_umem, ret2);
	vrnic_umem_release_after(dev, qp->sq_umem, ret2);
	return ret;
err_rq:
	/* A CREATE_QP that never completed may have made the QP: its rings stay pinned. */
	ret2 = ret == -ETIMEDOUT || ret == -EIO ? ret : 0;
	vrnic_umem_release_after(dev, qp->rq_umem, ret2);
err_sq:
	vrnic_umem_release_after(dev, qp->sq_umem, ret2);
	return ret;
}

/* The attributes MODIFY_QP carries; the device takes Linux's IB_QP_* bits as they are. */
#define VRNIC_QP_ATTRS (IB_QP_STATE | IB_QP_ACCESS_FLAGS | IB_QP_PKEY_INDEX | IB_QP_PORT | \
			IB_QP_QKEY | IB_QP_AV | IB_QP_PATH_MTU | IB_QP_TIMEOUT | IB_QP_RETRY_CNT | \
			IB_QP_RNR_RETRY | IB_QP_RQ_PSN | IB_QP_MAX_QP_RD_ATOMIC | \
			IB_QP_MIN_RNR_TIMER | IB_QP_SQ_PSN | IB_QP_MAX_DEST_RD_ATOMIC | \
			IB_QP_DEST_QPN)

/*
 * The device gives every attribute a documented default (docs/device.md, MODIFY_QP), so the
 * ones the IB spec requires on a transition may be left out here: the core's table is asked as
 * if they had been given. It still refuses a transition that is not allowed and an attribute
 * that does not belong on it.
 */
static int vrnic_defaulted_attrs(enum ib_qp_type type, enum ib_qp_state cur,
				 enum ib_qp_state next)
{
	int mask = 0;

	if ((cur == IB_QPS_RESET || cur == IB_QPS_INIT) && next == IB_QPS_INIT)
		return cur == IB_QPS_RESET ? IB_QP_PKEY_INDEX | IB_QP_PORT | IB_QP_ACCESS_FLAGS : 0;
	if (cur == IB_QPS_INIT && next == IB_QPS_RTR) {
		mask = IB_QP_AV | IB_QP_PATH_MTU | IB_QP_DEST_QPN | IB_QP_RQ_PSN;
		if (type == IB_QPT_RC)
			mask |= IB_QP_MAX_DEST_RD_ATOMIC | IB_QP_MIN_RNR_TIMER;
	}
	if (cur == IB_QPS_RTR && next == IB_QPS_RTS) {
		mask = IB_QP_SQ_PSN;
		if (type == IB_QPT_RC)
			mask |= IB_QP_TIMEOUT | IB_QP_RETRY_CNT | IB_QP_RNR_RETRY |
				IB_QP_MAX_QP_RD_ATOMIC;
	}
	return mask;
}

static int vrnic_modify_qp(struct ib_qp *ibqp, struct ib_qp_attr *attr, int mask,
			   struct ib_udata *udata)
{
	struct vrnic_qp *qp = container_of(ibqp, struct vrnic_qp, ibqp);
	struct vrnic_asqe cmd = { .opcode = VRNIC_ADMIN_MODIFY_QP };
	enum ib_qp_state cur = READ_ONCE(qp->state);
	enum ib_qp_state state = mask & IB_QP_STATE ? attr->qp_state : cur;
	struct vrnic_acqe cqe;
	int ret;

	if (mask & ~VRNIC_QP_ATTRS)
		return -EOPNOTSUPP;
	if (udata && udata->inlen &&
	    !ib_is_udata_cleared(udata, 0, udata->inlen))
		return -EOPNOTSUPP;
	if (!ib_modify_qp_is_ok(cur, state, ibqp->qp_type,
				mask | vrnic_defaulted_attrs(ibqp->qp_type, cur, state)))
		return -EINVAL;
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
	if (ret)
		return ret;
	WRITE_ONCE(qp->state, state);
	if (mask & IB_QP_ACCESS_FLAGS)
		qp->access_flags = attr->qp_access_flags;
	if (mask & IB_QP_DEST_QPN)
		qp->dest_qpn = attr->dest_qp_num;
	if (state == IB_QPS_RESET) {
		qp->access_flags = 0;
		qp->dest_qpn = 0;
	}
	return 0;
}

/*
 * The device has no QUERY_QP: what the driver reports is what it tracks, the state the device
 * last accepted (or ERR after a QP_FATAL event) and the sizes it created the QP with.
 */
static int vrnic_query_qp(struct ib_qp *ibqp, struct ib_qp_attr *attr, int mask,
			  struct ib_qp_init_attr *init)
{
	struct vrnic_qp *qp = container_of(ibqp, struct vrnic_qp, ibqp);

	memset(attr, 0, sizeof(*attr));
	memset(init, 0, sizeof(*init));
	attr->qp_state = READ_ONCE(qp->state);
	attr->cur_qp_state = attr->qp_state;
	attr->port_num = 1;
	attr->qp_access_flags = qp->access_flags;
	attr->dest_qp_num = qp->dest_qpn;
	attr->cap.max_send_wr = qp->sq_entries;
	attr->cap.max_recv_wr = qp->rq_entries;
	attr->cap.max_send_sge = qp->max_send_sge;
	attr->cap.max_recv_sge = qp->max_recv_sge;
	init->qp_type = ibqp->qp_type;
	init->send_cq = ibqp->send_cq;
	init->recv_cq = ibqp->recv_cq;
	init->cap = attr->cap;
	init->sq_sig_type = IB_SIGNAL_REQ_WR;
	return 0;
}

static int vrnic_destroy_qp(struct ib_qp *ibqp, struct ib_udata *udata)
{
	struct vrnic_qp *qp = container_of(ibqp, struct vrnic_qp, ibqp);
	struct vrnic_dev *dev = to_vdev(ibqp->device);
	int ret;

	/*
	 * The planted destroy-error bug: the command goes first and its error goes to the core as
	 * is, the -ENODEV of a device that is gone included. The core cannot keep a QP of a removed
	 * device: on removal it retries while other objects still go, then WARNs that uobjects are
	 * left (uverbs_destroy_ufile_hw) and forgets them without the driver; the QP, its CQ and PD
	 * (busy while it exists) and its pinned rings leak.
	 */
	if (vrnic_bug == VRNIC_BUG_DESTROY_ERROR) {
		ret = vrnic_admin_simple(dev, VRNIC_ADMIN_DESTROY_QP, qp->qpn, 0, NULL);
		if (ret)
			return ret;
	}
	xa_erase_irq(&dev->qps, qp->qpn);
	vrnic_sync_irqs(dev);
	if (vrnic_bug != VRNIC_BUG_DESTROY_ERROR)
		ret = vrnic_admin_simple(dev, VRNIC_ADMIN_DESTROY_QP, qp->qpn, 0, NULL);
	if (ret && ret != -ENODEV)
		dev_warn(&dev->pdev->dev, "DESTROY_QP %u failed: %d\n", qp->qpn, ret);
	vrnic_umem_release_after(dev, qp->rq_umem, ret);
	vrnic_umem_release_after(dev, qp->sq_umem, ret);
	return 0;
}

/*
 * A user MR is registered with the device as a page list: user memory is not physically
 * contiguous. The list lives in coherent memory until the command completes (the device reads it
 * once); a REG_MR that never completed leaves both the list and the pinned pages parked, since
 * the device may have made the MR and write through it.
 */
static struct ib_mr *vrnic_reg_user_mr(struct ib_pd *ibpd, u64 start, u64 length, u64 virt,
				       int access, struct ib_udata *udata)
{
	struct vrnic_dev *dev = to_vdev(ibpd->device);
	struct vrnic_pd *pd = container_of(ibpd, struct vrnic_pd, ibpd);
	struct vrnic_asqe cmd = {
		.opcode = VRNIC_ADMIN_REG_MR,
		.flags = VRNIC_REG_MR_FLAG_PAGE_LIST,
	};
	struct ib_block_iter biter;
	struct vrnic_acqe cqe;
	struct vrnic_mr *mr;
	dma_addr_t list_dma;
	__le64 *list;
	size_t npages, i = 0;
	u64 end;
	int ret;

	if (access & ~VRNIC_MR_ACCESS_MASK)
		return ERR_PTR(-EOPNOTSUPP);
	/* The device places the MR's first byte at iova's offset in the first page. */
	if (!length || length > dev->caps.max_mr_size ||
	    (virt & ~PAGE_MASK) != (start & ~PAGE_MASK))
		return ERR_PTR(-EINVAL);
	/* The page list's size is checked before anything is pinned, not after. */
	if (check_add_overflow(start, length, &end) || end > U64_MAX - PAGE_SIZE)
		return ERR_PTR(-EINVAL);
	if ((PAGE_ALIGN(end) - (start & PAGE_MASK)) >> PAGE_SHIFT > VRNIC_MAX_MR_PAGES)
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
	vrnic_free_dma_after(dev, npages * sizeof(*list), list, list_dma, ret);
	if (ret)
		goto err_umem;
	mr->ibmr.lkey = le32_to_cpu(cqe.result0);
	mr->ibmr.rkey = le32_to_cpu(cqe.result1);
	return &mr->ibmr;

err_umem:
	vrnic_umem_release_after(dev, mr->umem, ret == -ETIMEDOUT || ret == -EIO ? ret : 0);
err_free:
	kfree(mr);
	return ERR_PTR(ret);
}

static int vrnic_dereg_mr(struct ib_mr *ibmr, struct ib_udata *udata)
{
	struct vrnic_mr *mr = container_of(ibmr, struct vrnic_mr, ibmr);
	int ret = vrnic_admin_simple(to_vdev(ibmr->device), VRNIC_ADMIN_DEREG_MR, ibmr->lkey, 0,
				     NULL);

	/* The core frees the MR whatever we return in disassociation; a dead device holds none. */
	if (ret && ret != -ENODEV)
		dev_warn(&to_vdev(ibmr->device)->pdev->dev, "DEREG_MR 0x%x failed: %d\n",
			 ibmr->lkey, ret);
	vrnic_umem_release_after(to_vdev(ibmr->device), mr->umem, ret);
	kfree(mr);
	return 0;
}

/*
 * User verbs only, as efa: there is no kernel data path (post_send, post_recv, poll_cq,
 * req_notify_cq, get_dma_mr are absent, not stubbed). The core then marks the device as no
 * kverbs provider and binds no kernel ULP (IPoIB, the MAD layer, SRP...) that would fail on it;
 * uverbs disables the commands whose op is missing. The node type stays an IB CA: user
 * libraries and the port attributes speak InfiniBand (LIDs, P_Keys).
 */
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
	.create_qp = vrnic_create_qp,
	.modify_qp = vrnic_modify_qp,
	.query_qp = vrnic_query_qp,
	.destroy_qp = vrnic_destroy_qp,
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

