// SPDX-License-Identifier: GPL-2.0
/*
 * vrnic_main.c: reference Linux 6.1 driver for the vrnic emulated RDMA NIC (docs/device.md).
 *
 * What it exists to show: user mappings of UAR (doorbell) pages go through the RDMA core's
 * rdma_user_mmap_io tracking so that a hot unplug zaps them; the remove path never waits on a
 * device that has vanished. Six planted bugs (module parameter bug=) are the negative controls.
 */
#include <linux/module.h>
#include <linux/pci.h>
#include <linux/interrupt.h>
#include <linux/dma-mapping.h>
#include <linux/ktime.h>
#include <linux/string.h>

#include "vrnic.h"
#include "vrnic_com.h"
#include "vrnic-abi.h"

static char *bug = "none";
module_param(bug, charp, 0444);
MODULE_PARM_DESC(bug,
		 "plant a classic driver bug: none (default), legacy-mmap, no-disassociate, private-tracking, zap-sigbus, destroy-error, held-reference");

/* Writable at run time, so bounded at run time: 0 would fail every command, huge ones hang. */
#define VRNIC_ADMIN_TIMEOUT_MIN_MS	10
#define VRNIC_ADMIN_TIMEOUT_MAX_MS	60000

unsigned int admin_timeout_ms = 5000;

static int vrnic_set_admin_timeout(const char *val, const struct kernel_param *kp)
{
	return param_set_uint_minmax(val, kp, VRNIC_ADMIN_TIMEOUT_MIN_MS,
				     VRNIC_ADMIN_TIMEOUT_MAX_MS);
}

static const struct kernel_param_ops vrnic_admin_timeout_ops = {
	.set = vrnic_set_admin_timeout,
	.get = param_get_uint,
};

module_param_cb(admin_timeout_ms, &vrnic_admin_timeout_ops, &admin_timeout_ms, 0644);
MODULE_PARM_DESC(admin_timeout_ms, "bound on one admin command, in ms (10..60000, default 5000)");

enum vrnic_bug vrnic_bug;

/* The bug= names, indexed by enum vrnic_bug (docs/unplug.md describes each). */
static const char * const vrnic_bug_names[] = {
	[VRNIC_BUG_NONE] = "none",
	[VRNIC_BUG_LEGACY_MMAP] = "legacy-mmap",
	[VRNIC_BUG_NO_DISASSOCIATE] = "no-disassociate",
	[VRNIC_BUG_PRIVATE_TRACKING] = "private-tracking",
	[VRNIC_BUG_ZAP_SIGBUS] = "zap-sigbus",
	[VRNIC_BUG_DESTROY_ERROR] = "destroy-error",
	[VRNIC_BUG_HELD_REFERENCE] = "held-reference",
};

static int vrnic_setup_irqs(struct vrnic_dev *dev)
{
	struct pci_dev *pdev = dev->pdev;
	u32 want = vrnic_read(dev, VRNIC_REG_NUM_VECTORS);
	int nvec, ret, i;

	if (want == VRNIC_REG_GONE)
		return -ENODEV;
	want = clamp_t(u32, want, 2, VRNIC_MAX_VECTORS);
	/* MSI-X, else MSI, else INTx: whichever the device offers. */
	nvec = pci_alloc_irq_vectors(pdev, 1, want, PCI_IRQ_ALL_TYPES);
	/*
	 * Fewer vectors than sources would fold several sources onto one vector (MSI: v mod E);
	 * only the one-vector mode reads INT_CAUSE, so take that rather than a partial set.
	 */
	if (nvec > 1 && nvec < want) {
		pci_free_irq_vectors(pdev);
		nvec = pci_alloc_irq_vectors(pdev, 1, 1, PCI_IRQ_ALL_TYPES);
	}
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
	ret = request_irq(pci_irq_vector(pdev, VRNIC_VEC_ADMIN), vrnic_admin_irq, 0, "vrnic-admin",
			  dev);
	if (ret)
		goto err_vectors;
	ret = request_threaded_irq(pci_irq_vector(pdev, VRNIC_VEC_EVENT), NULL, vrnic_event_thread,
				   IRQF_ONESHOT, "vrnic-event", dev);
	if (ret)
		goto err_admin;
	for (i = VRNIC_VEC_FIRST_COMP; i < nvec; i++) {
		struct vrnic_comp_vec *vec = &dev->comp_vecs[i - VRNIC_VEC_FIRST_COMP];

		vec->dev = dev;
		vec->index = i - VRNIC_VEC_FIRST_COMP;
		ret = request_irq(pci_irq_vector(pdev, i), vrnic_comp_irq, 0, "vrnic-comp", vec);
		if (ret)
			goto err_comp;
	}
	return 0;

err_comp:
	while (--i >= VRNIC_VEC_FIRST_COMP)
		free_irq(pci_irq_vector(pdev, i), &dev->comp_vecs[i - VRNIC_VEC_FIRST_COMP]);
	free_irq(pci_irq_vector(pdev, VRNIC_VEC_EVENT), dev);
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
	u32 i;

	if (!dev->num_vectors)
		return;
	for (i = VRNIC_VEC_FIRST_COMP; i < dev->num_vectors; i++)
		free_irq(pci_irq_vector(dev->pdev, i), &dev->comp_vecs[i - VRNIC_VEC_FIRST_COMP]);
	if (dev->num_vectors > 1)
		free_irq(pci_irq_vector(dev->pdev, VRNIC_VEC_EVENT), dev);
	free_irq(pci_irq_vector(dev->pdev, VRNIC_VEC_ADMIN), dev);
	pci_free_irq_vectors(dev->pdev);
	dev->num_vectors = 0;
}

/*
 * Bus mastering off: the device can no longer write memory, whatever state it is in. Skipped
 * for a device that has gone (it writes nothing, and each config access to a dead vfio-user
 * server waits for a timeout); the PCI core itself skips config access to a disconnected one.
 */
static void vrnic_stop_dma(struct vrnic_dev *dev)
{
	if (!READ_ONCE(dev->gone))
		pci_clear_master(dev->pdev);
	WRITE_ONCE(dev->dma_stopped, true);
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
	/*
	 * What is advertised is what the driver accepts, not what the device could do: user rings
	 * are one page (vrnic_pin_ring), an MR's page list holds VRNIC_MAX_MR_PAGES pages whatever
	 * the offset of its first byte.
	 */
	dev->caps.max_cqe = min_t(u32, dev->caps.max_cqe, VRNIC_USER_RING_BYTES / VRNIC_CQE_BYTES);
	dev->caps.max_qp_wr = min_t(u32, dev->caps.max_qp_wr,
				    VRNIC_USER_RING_BYTES / VRNIC_WQE_BYTES);
	dev->caps.max_mr_size = min_t(u64, dev->caps.max_mr_size,
				      (u64)(VRNIC_MAX_MR_PAGES - 1) << PAGE_SHIFT);
	return 0;
}

static int vrnic_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	struct vrnic_dev *dev;
	u32 version, magic;
	int ret;

	dev = ib_alloc_device(vrnic_dev, ibdev);
	if (!dev)
		return -ENOMEM;
	dev->pdev = pdev;
	mutex_init(&dev->admin_lock);
	spin_lock_init(&dev->acq_lock);
	spin_lock_init(&dev->parked_lock);
	INIT_LIST_HEAD(&dev->parked);
	spin_lock_init(&dev->port_lock);
	/* Completion handlers look CQs up in interrupt context. */
	xa_init_flags(&dev->cqs, XA_FLAGS_LOCK_IRQ);
	xa_init_flags(&dev->qps, XA_FLAGS_LOCK_IRQ);
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
	/* The kernel only reads BAR2 (CQ arm words); user space writes it through its mappings. */
	dev->uar = pci_iomap(pdev, VRNIC_BAR_UAR, 0);
	if (!dev->uar) {
		ret = -ENOMEM;
		goto err_unmap;
	}

	version = vrnic_read(dev, VRNIC_REG_VERSION);
	magic = vrnic_read(dev, VRNIC_REG_MAGIC);
	if (magic != VRNIC_MAGIC || VRNIC_VERSION_MAJOR(version) != VRNIC_VERSION_MAJOR_SUPPORTED) {
		dev_err(&pdev->dev, "not a vrnic v1 device (magic 0x%08x version 0x%08x)\n",
			magic, version);
		ret = -ENODEV;
		goto err_unmap;
	}
	dev->num_uars = vrnic_read(dev, VRNIC_REG_NUM_UARS);
	dev->num_ports = vrnic_read(dev, VRNIC_REG_NUM_PORTS);
	/* BAR2 must hold every UAR page the device claims, or a user mapping could run past it. */
	if (!dev->num_uars || dev->num_uars > dev->uar_len / VRNIC_UAR_PAGE_SIZE ||
	    dev->num_ports != 1) {
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
		/* It may have taken the queue addresses and be half enabled: reset it anyway. */
		dev_err(&pdev->dev, "device did not become ready: %d\n", ret);
		goto err_reset;
	}
	ret = vrnic_read_caps(dev);
	if (ret) {
		dev_err(&pdev->dev, "QUERY_DEVICE failed: %d\n", ret);
		goto err_reset;
	}
	ret = vrnic_admin_query(dev, VRNIC_ADMIN_QUERY_PORT, 1, &dev->port_cache,
				sizeof(dev->port_cache));
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
	WRITE_ONCE(dev->registered, true);
	/*
	 * The planted held-reference bug: the driver keeps a registration lock on its ib_device for
	 * as long as it is bound (meant to keep the device registered while the event thread
	 * dispatches) and drops it in remove only after ib_unregister_device, which first waits for
	 * every such lock to go: remove never returns, and the PCI function and the ib device stay.
	 */
	if (vrnic_bug == VRNIC_BUG_HELD_REFERENCE)
		WARN_ON(!ib_device_try_get(&dev->ibdev));
	dev_info(&pdev->dev, "%s: version 0x%08x, %u UAR pages at %pa, %u vectors, %s, bug=%s\n",
		 dev_name(&dev->ibdev.dev), version, dev->num_uars, &dev->uar_phys,
		 dev->num_vectors, vrnic_irq_type(dev), bug);
	return 0;

	/* The same order as remove: no DMA, then no interrupts, then free what DMA could reach. */
err_reset:
	vrnic_hw_reset(dev);
	vrnic_stop_dma(dev);
	vrnic_teardown_irqs(dev);
err_queues:
	vrnic_free_queues(dev);
	vrnic_reclaim_parked(dev);
err_unmap:
	if (dev->uar)
		pci_iounmap(pdev, dev->uar);
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
	WRITE_ONCE(dev->registered, false);
	ib_unregister_device(&dev->ibdev);
	if (vrnic_bug == VRNIC_BUG_HELD_REFERENCE)
		ib_device_put(&dev->ibdev);
	/*
	 * Nothing the device may still write is freed before it cannot write: reset it, then take
	 * bus mastering away (which holds even when the reset timed out), then free the queues and
	 * whatever was parked after a failed or timed-out command.
	 */
	vrnic_hw_reset(dev);
	vrnic_stop_dma(dev);
	/*
	 * Whether config space is touched again (MSI-X teardown, disable) is the PCI core's call:
	 * it skips those accesses for a function it marked disconnected (pciehp on a surprise
	 * removal) or offline (AER, DPC). The driver reads that state and never writes it.
	 */
	vrnic_teardown_irqs(dev);
	vrnic_free_queues(dev);
	vrnic_reclaim_parked(dev);
	xa_destroy(&dev->cqs);
	xa_destroy(&dev->qps);
	pci_iounmap(pdev, dev->uar);
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
	int i = !bug || !*bug ? VRNIC_BUG_NONE :
		match_string(vrnic_bug_names, ARRAY_SIZE(vrnic_bug_names), bug);

	if (i < 0) {
		pr_err(DRV_NAME ": unknown bug=%s (see the module parameter's description)\n", bug);
		return -EINVAL;
	}
	vrnic_bug = i;
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
