# The demo image: nothing pulled, nothing built inside. `make image`
# assembles build/rootfs on the host: the static broker and node, the nats
# CLI, and a static busybox (Debian's busybox-static) for /bin/sh and the
# usual commands.
FROM scratch
COPY rootfs/ /
ENV PATH=/usr/local/bin:/bin
WORKDIR /root
