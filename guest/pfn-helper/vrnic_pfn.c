// SPDX-License-Identifier: GPL-2.0
/*
 * vrnic_pfn.c: tells user space which physical frame a process's virtual address maps to, for
 * VM_PFNMAP/VM_IO mappings that /proc/PID/pagemap cannot see (the kernel's page walk skips them).
 *
 * Protocol on /dev/vrnic_pfn (root only): write "PID ADDR" (ADDR in hex with 0x, or decimal), then
 * read one line answering it, on the same open file:
 *   present pid=P addr=0xA pfn=0xF phys=0xF000 vma=0xS-0xE flags=0xV
 *   not-present pid=P addr=0xA vma=0xS-0xE flags=0xV     (no PTE: zapped, or never faulted in)
 *   not-pfnmap pid=P addr=0xA vma=0xS-0xE flags=0xV      (an ordinary mapping: follow_pfn
 *                                                         refuses it)
 *   no-vma pid=P addr=0xA
 *   no-process pid=P
 */
#include <linux/module.h>
#include <linux/miscdevice.h>
#include <linux/fs.h>
#include <linux/mm.h>
#include <linux/sched/mm.h>
#include <linux/pid.h>
#include <linux/slab.h>
#include <linux/uaccess.h>

#define ANSWER_MAX 192

struct pfn_query {
	struct mutex lock;	/* one query and its answer at a time per open file */
	size_t len;
	char answer[ANSWER_MAX];
};

static void pfn_lookup(struct pfn_query *q, pid_t nr, unsigned long addr)
{
	struct task_struct *task;
	struct mm_struct *mm;
	struct vm_area_struct *vma;
	struct pid *pid;
	unsigned long pfn;
	int ret;

	pid = find_get_pid(nr);
	task = pid ? get_pid_task(pid, PIDTYPE_PID) : NULL;
	put_pid(pid);
	mm = task ? get_task_mm(task) : NULL;
	if (task)
		put_task_struct(task);
	if (!mm) {
		q->len = scnprintf(q->answer, ANSWER_MAX, "no-process pid=%d\n", nr);
		return;
	}

	mmap_read_lock(mm);
	vma = find_vma(mm, addr);
	if (!vma || vma->vm_start > addr) {
		q->len = scnprintf(q->answer, ANSWER_MAX, "no-vma pid=%d addr=0x%lx\n", nr, addr);
	} else if (!(vma->vm_flags & (VM_IO | VM_PFNMAP))) {
		q->len = scnprintf(q->answer, ANSWER_MAX,
				   "not-pfnmap pid=%d addr=0x%lx vma=0x%lx-0x%lx flags=0x%lx\n",
				   nr, addr, vma->vm_start, vma->vm_end, vma->vm_flags);
	} else {
		ret = follow_pfn(vma, addr, &pfn);
		if (ret)
			q->len = scnprintf(q->answer, ANSWER_MAX,
					   "not-present pid=%d addr=0x%lx vma=0x%lx-0x%lx flags=0x%lx\n",
					   nr, addr, vma->vm_start, vma->vm_end, vma->vm_flags);
		else
			q->len = scnprintf(q->answer, ANSWER_MAX,
					   "present pid=%d addr=0x%lx pfn=0x%lx phys=0x%llx vma=0x%lx-0x%lx flags=0x%lx\n",
					   nr, addr, pfn, (unsigned long long)PFN_PHYS(pfn),
					   vma->vm_start, vma->vm_end, vma->vm_flags);
	}
	mmap_read_unlock(mm);
	mmput(mm);
}

static int pfn_open(struct inode *inode, struct file *file)
{
	struct pfn_query *q = kzalloc(sizeof(*q), GFP_KERNEL);

	if (!q)
		return -ENOMEM;
	mutex_init(&q->lock);
	file->private_data = q;
	return 0;
}

static int pfn_release(struct inode *inode, struct file *file)
{
	kfree(file->private_data);
	return 0;
}

static ssize_t pfn_write(struct file *file, const char __user *ubuf, size_t count, loff_t *ppos)
{
	struct pfn_query *q = file->private_data;
	char buf[64];
	int nr;
	unsigned long addr;

	if (count == 0 || count >= sizeof(buf))
		return -EINVAL;
	if (copy_from_user(buf, ubuf, count))
		return -EFAULT;
	buf[count] = '\0';
	if (sscanf(buf, "%d %li", &nr, (long *)&addr) != 2 || nr <= 0)
		return -EINVAL;

	mutex_lock(&q->lock);
	pfn_lookup(q, nr, addr);
	mutex_unlock(&q->lock);
	*ppos = 0;
	return count;
}

static ssize_t pfn_read(struct file *file, char __user *ubuf, size_t count, loff_t *ppos)
{
	struct pfn_query *q = file->private_data;
	ssize_t ret;

	mutex_lock(&q->lock);
	ret = simple_read_from_buffer(ubuf, count, ppos, q->answer, q->len);
	mutex_unlock(&q->lock);
	return ret;
}

static const struct file_operations pfn_fops = {
	.owner = THIS_MODULE,
	.open = pfn_open,
	.release = pfn_release,
	.write = pfn_write,
	.read = pfn_read,
	.llseek = no_llseek,
};

static struct miscdevice pfn_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "vrnic_pfn",
	.fops = &pfn_fops,
	.mode = 0600,
};

module_misc_device(pfn_misc);

MODULE_AUTHOR("vrnic project");
MODULE_DESCRIPTION("Reports the physical frame behind a process's PFN-mapped address (vrnic tests)");
MODULE_LICENSE("GPL");
