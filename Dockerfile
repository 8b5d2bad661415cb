# exsf service image: one image, `exsf run <service>` picks the service (deploy/k8s).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY services ./services
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
# Non-root, matching runAsUser in deploy/k8s; only /tmp and /var/lib/exsf are written.
RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin exsf \
 && mkdir -p /var/lib/exsf && chown 10001 /var/lib/exsf
COPY --from=build /install /usr/local
USER 10001
ENV EXSF_STATE_DIR=/var/lib/exsf PYTHONUNBUFFERED=1
EXPOSE 9000 8080
ENTRYPOINT ["exsf"]
CMD ["--help"]
