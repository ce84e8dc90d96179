# syntax=docker/dockerfile:1
# The model-repository image for the chart's Triton initContainer (triton.modelRepository.source=initContainer):
# a Triton model repository at /models, which the initContainer copies into the pod's emptyDir with
# `cp -R /models/. /model-repository/` (charts/hymirec/templates/triton-deployment.yaml).
#
#   docker build -f images/models.Dockerfile -t registry.example.com/hymirec/hymirec-models:0.1.0 \
#       <artifact root>/triton/production        # the build context is the repository (hymirec export triton)
#
# Only `cp` is needed from BASE (any Debian image; the tests pass the local debootstrap base). The files are owned
# by root and readable by everyone: the initContainer runs as the Triton pod's user (1000 by default, 10001 when
# the pod keeps the chart's global securityContext).
ARG BASE=docker.io/library/debian:bookworm-slim
FROM ${BASE} AS stage
COPY . /models/
# Whatever the umask of the pipeline that wrote the repository, every uid may read it (and nobody else may write).
RUN chmod -R u=rwX,go=rX /models

# A second stage, so the repository is one layer (a chmod in place would store every file twice).
FROM ${BASE}
COPY --from=stage /models /models
USER 10001:10001
WORKDIR /models
CMD ["cp", "-R", "/models/.", "/model-repository/"]
