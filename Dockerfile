# zeroserve's container image: `make image` builds it (deploy/docker/build_image.py says how,
# with no image registry: the base is a debootstrapped Debian root, imported).
#
#   runtime   the package and its `zeroserve` CLI on Debian's Python, as a non-root user (10001)
#   examples  the same plus examples/ (in /opt/zeroserve-examples, the working directory)
#
# Run a node in the foreground (tini is PID 1: it forwards SIGTERM and reaps orphans):
#   docker run --network host -e ZEROSERVE_TOKEN=... zeroserve start --head --block
# Written for the classic builder of Debian's docker.io (no BuildKit-only syntax).

ARG BASE=zeroserve-base:bookworm

FROM ${BASE} AS python
LABEL org.zeroserve.build=1
# Debian's Python and tini; nothing else. DEBIAN_FRONTEND only for this step.
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3 tini >/dev/null \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /var/log/apt /var/log/dpkg.log

FROM python AS build
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null \
 && apt-get clean && rm -rf /var/lib/apt/lists/*
# pip's settings of the machine that builds (index URLs, CA bundle): see build_image.py.
COPY .image-build/ /etc/zeroserve-build/
ENV PIP_CONFIG_FILE=/etc/zeroserve-build/pip.conf
RUN python3 -m venv /opt/zeroserve
# Dependencies (and the build backend) first, in their own layer: rebuilt only when
# pyproject.toml's lists change, not when the sources do.
RUN /opt/zeroserve/bin/pip install -q -r /etc/zeroserve-build/requirements.txt
COPY pyproject.toml README.md /src/
COPY actors /src/actors
COPY cluster /src/cluster
COPY serve /src/serve
COPY proxy /src/proxy
# pip stays in the venv: an application image `FROM zeroserve` installs its own packages.
RUN /opt/zeroserve/bin/pip install -q --no-deps --no-build-isolation /src && rm -rf /src

FROM build AS build-examples
RUN /opt/zeroserve/bin/pip install -q -r /etc/zeroserve-build/requirements-examples.txt

FROM python AS runtime
# A fixed non-root user (Kubernetes' runAsUser/fsGroup name it by number). minbase has no
# useradd: the account is two lines.
RUN echo 'zeroserve:x:10001:10001:zeroserve:/home/zeroserve:/usr/sbin/nologin' >> /etc/passwd \
 && echo 'zeroserve:x:10001:' >> /etc/group \
 && mkdir -p /home/zeroserve /var/lib/zeroserve \
 && chown 10001:10001 /home/zeroserve /var/lib/zeroserve && chmod 0700 /var/lib/zeroserve
COPY --from=build /opt/zeroserve /opt/zeroserve
ENV PATH=/opt/zeroserve/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 \
    HOME=/home/zeroserve \
    ZEROSERVE_TMPDIR=/tmp/zeroserve
USER 10001:10001
WORKDIR /home/zeroserve
# 6380: the head; 8000: Serve's HTTP proxy; 8080: the node's metrics endpoint.
EXPOSE 6380 8000 8080
# The node started in this container answers (its agent, and its head on a head node).
HEALTHCHECK --interval=10s --timeout=8s --start-period=30s --retries=3 CMD ["zeroserve", "health"]
ENTRYPOINT ["/usr/bin/tini", "--", "zeroserve"]
CMD ["--help"]

FROM runtime AS examples
USER 0:0
COPY --from=build-examples /opt/zeroserve /opt/zeroserve
COPY examples /opt/zeroserve-examples/examples
USER 10001:10001
WORKDIR /opt/zeroserve-examples
