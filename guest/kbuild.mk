# The out-of-tree half of the guest's module Makefiles (driver/, pfn-helper/): `make` in either
# builds its module against Debian's 6.1 headers (override with KDIR=). Kbuild itself reads only
# the KERNELRELEASE half of each Makefile, so builds that copy a module's folder elsewhere (the
# image builder, the lint test) never need this file.
KDIR ?= $(shell ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n 1)

all:
	$(MAKE) -C $(KDIR) M=$(CURDIR) modules

clean:
	$(MAKE) -C $(KDIR) M=$(CURDIR) clean
