#!/usr/bin/env bash
# `make images`: the OCI image archives of hybridnet, built offline with Debian's umoci (no base
# image, no registry; docs/images.md):
#   target/images/hybridnet.oci.tar  operator, node agent, static CNI plugin, kubectl plugin, and
#                                    the programs of scripts/images/agent-tools.txt with their libraries
#   target/images/pause.oci.tar      the lab's pod sandbox image (static hybridnet-pause)
#   target/images/bundle.oci.tar     the OLM bundle image, from bundle.Dockerfile's LABELs and COPYs
# Usage:
#   build.sh images [debug|release]          build the three archives from target/<profile>/
#   build.sh rootfs OUT BIN_DIR STATIC_DIR   only assemble the hybridnet image's root filesystem
#                                            (the Dockerfile's build stage runs this)
#   build.sh digest ARCHIVE                  print the manifest digest (sha256:...) of an archive
# Reproducible: every file, the image config and its history carry the time SOURCE_DATE_EPOCH
# (default 0), the archive's own entries too, so the same binaries and host programs give the
# same digests (written to target/images/digests.txt). IMAGES_OUT overrides target/images and
# IMAGES_STATIC_DIR the static binaries' folder (default: scripts/images/static.sh builds them).
set -euo pipefail
cd "$(dirname "$0")/../.."

die() { echo "images: $*" >&2; exit 1; }

# Copies the shared libraries and the program interpreter of ELF file $2 into root $1, each at the
# path the dynamic loader resolves it to here (ldd), as a regular file.
copy_libs() {
  local root="$1" f="$2" lib
  # ldd of a static binary prints "not a dynamic executable" and fails: nothing to copy.
  ldd "$f" >/dev/null 2>&1 || return 0
  while read -r lib; do
    [ -e "$root$lib" ] && continue
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done < <(ldd "$f" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}')
}

# The hybridnet image's root filesystem in $1: the binaries of $2 (dynamic, glibc) and the plugin of
# $3 (static) in /usr/local/bin, each agent tool at its path here, their libraries, a passwd and
# group naming root and the operator's user 65532, and an empty /tmp.
rootfs() {
  local out="$1" bins="$2" static="$3" b t p
  rm -rf "$out"
  mkdir -p "$out/usr/local/bin" "$out/etc" "$out/tmp"
  chmod 1777 "$out/tmp"
  for b in "$bins/hybridnet-operator" "$bins/hybridnet-node" "$bins/kubectl-hybridnet" "$static/hybridnet"; do
    [ -f "$b" ] || die "$b missing (cargo build; scripts/images/static.sh)"
    install -m 0755 "$b" "$out/usr/local/bin/"
    strip --strip-debug "$out/usr/local/bin/$(basename "$b")"
  done
  local real xt
  while read -r t; do
    p="$(command -v "$t")" || die "agent tool $t is not installed here (make deps)"
    real="$(readlink -f "$p")"
    # A name that is a symlink here (iptables-nft-save -> xtables-nft-multi) stays one: the
    # multi-call binary is copied once and picks its job from the name.
    if [ ! -e "$out$real" ]; then
      mkdir -p "$out$(dirname "$real")"
      cp "$real" "$out$real"
      copy_libs "$out" "$real"
    fi
    if [ "$p" != "$real" ]; then
      mkdir -p "$out$(dirname "$p")"
      ln -sfn "$real" "$out$p"
    fi
    # iptables loads its match and target extensions at run time (save prints rules with them).
    case "$(basename "$real")" in
      xtables-*-multi)
        # Next to libxtables, by its real path: the folder compiled into it (XTABLES_LIBDIR).
        xt="$(dirname "$(readlink -f "$(ldd "$real" | awk '$1 == "libxtables.so.12" {print $3}')")")/xtables"
        if [ -d "$xt" ] && [ ! -d "$out$xt" ]; then
          mkdir -p "$out$xt"
          cp -R "$xt/." "$out$xt"
          for f in "$out$xt"/*.so; do copy_libs "$out" "$f"; done
        fi
        ;;
    esac
  done < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' scripts/images/agent-tools.txt | grep -v '^$')
  # iptables loads its matches and targets (comment, set, MARK, ...) as plugins ldd does not see.
  if grep -q '^ip6\?tables-' scripts/images/agent-tools.txt; then
    for p in /usr/lib/*/xtables /usr/lib/xtables; do
      [ -d "$p" ] || continue
      mkdir -p "$out$p"
      cp -L "$p"/*.so "$out$p/"
      for t in "$out$p"/*.so; do copy_libs "$out" "$t"; done
    done
  fi
  for b in "$out"/usr/local/bin/*; do copy_libs "$out" "$b"; done
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin\n' >"$out/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$out/etc/group"
}

# Writes OCI archive $1.oci.tar of image reference $2 (repository:tag) from root filesystem $3 with
# `umoci config` flags $4...; appends a line to sizes.txt.
oci_archive() {
  local name="$1" ref="$2" root="$3"
  shift 3
  local layout="$tmp/layout-$name" tag="${ref##*:}" digest
  # Fixed times: the layer's entries, the config's `created` and both history entries.
  find "$root" -exec touch -h -d "@$sde" {} +
  umoci init --layout "$layout"
  umoci new --image "$layout:$tag"
  umoci insert --image "$layout:$tag" --history.created_by "scripts/images/build.sh" \
    --history.created "$created" "$root" /
  umoci config --image "$layout:$tag" --os linux --architecture "$arch" \
    --created "$created" --history.created "$created" "$@"
  umoci gc --layout "$layout"
  # umoci names the image by tag only (org.opencontainers.image.ref.name); containerd's importer
  # takes the full reference from io.containerd.image.name, so `ctr images import` needs no flag.
  grep -q "\"org.opencontainers.image.ref.name\":\"$tag\"" "$layout/index.json" \
    || die "$layout/index.json: no ref.name $tag"
  sed -i "s|\"org.opencontainers.image.ref.name\":\"$tag\"|\"io.containerd.image.name\":\"$ref\",&|" "$layout/index.json"
  tar --sort=name --mtime="@$sde" --owner=0 --group=0 --numeric-owner \
    -C "$layout" -cf "$outdir/$name.oci.tar" .
  digest="$(manifest_digest <"$layout/index.json")"
  printf '%s %s %s\n' "$name.oci.tar" "$ref" "$digest" >>"$outdir/digests.txt"
  rm -rf "$layout"
  printf '%-20s %-50s %9s %9s\n' "$name.oci.tar" "$ref" \
    "$(du -sk "$root" | cut -f1)" "$(du -k "$outdir/$name.oci.tar" | cut -f1)" | tee -a "$outdir/sizes.txt"
}

# The digest of the one manifest an OCI index (on stdin) lists.
manifest_digest() {
  local d
  d="$(grep -o '"digest":"sha256:[0-9a-f]\{64\}"' | head -n1 | cut -d'"' -f4)"
  [ -n "$d" ] || die "index.json: no manifest digest"
  echo "$d"
}

# bundle.Dockerfile (generated by bundlegen) is FROM scratch, LABELs and COPYs; anything else is
# refused rather than guessed. Fills the bundle root $1 and prints one --config.label flag a line.
bundle_from_dockerfile() {
  local root="$1" kw rest src dst
  while read -r kw rest; do
    case "$kw" in
      ''|'#'*) ;;
      FROM) [ "$rest" = scratch ] || die "bundle.Dockerfile: FROM $rest: only scratch is supported" ;;
      LABEL) echo "--config.label=$rest" ;;
      COPY)
        read -r src dst <<<"$rest"
        [ -d "$src" ] || die "bundle.Dockerfile: COPY source $src is not a folder"
        mkdir -p "$root$dst"
        cp -R "$src/." "$root$dst"
        ;;
      *) die "bundle.Dockerfile: instruction $kw is not supported here" ;;
    esac
  done < bundle.Dockerfile
}

images() {
  local profile="${1:-release}" why=""
  command -v umoci >/dev/null || why="umoci is not installed (make deps)"
  [ "$(id -u)" -eq 0 ] || why="run as root: image files must be owned by root"
  if [ -n "$why" ]; then
    # make test without root: the image tests skip too (a skip under CI=true fails).
    if [ "${IMAGES_OPTIONAL:-}" = 1 ] && [ "${CI:-}" != true ]; then
      echo "images: skipped: $why" >&2
      return 0
    fi
    die "$why"
  fi
  case "$(uname -m)" in
    x86_64) arch=amd64 ;;
    aarch64) arch=arm64 ;;
    *) die "machine $(uname -m) is not supported" ;;
  esac
  local static image registry tag user group
  static="${IMAGES_STATIC_DIR:-$(scripts/images/static.sh "$profile")}"
  # Name and users as the generated operator Deployment (deploy/operator.yaml) has them.
  # (a long reference is folded onto the next line: `image: >-`)
  image="$(awk '/^ *image: *>-$/ {getline; gsub(/^ +/, ""); print; exit}
    /^ *image: / {sub(/^ *image: */, ""); print; exit}' deploy/operator.yaml)"
  # The image's user: nonroot of its /etc/passwd. The operator Deployment sets no runAsUser (it
  # runs as this user on Kubernetes; OpenShift assigns one from the namespace's range).
  user=65532
  group=65532
  [ -n "$image" ] || die "deploy/operator.yaml: no image"
  # A bundle pinned by digest (make bundle-pinned) names the image repository@sha256:...; the
  # archives keep the version tag (the workspace version, as bundlegen's tag).
  if [[ "$image" == *@* ]]; then
    image="${image%@*}:v$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)"
  fi
  tag="${image##*:}"
  registry="${image%/*}"
  outdir="${IMAGES_OUT:-target/images}"
  sde="${SOURCE_DATE_EPOCH:-0}"
  [[ "$sde" =~ ^[0-9]+$ ]] || die "SOURCE_DATE_EPOCH=$sde is not a number of seconds"
  created="$(date -u -d "@$sde" +%Y-%m-%dT%H:%M:%SZ)"
  tmp="$outdir/tmp"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  : >"$outdir/digests.txt"
  printf '%-20s %-50s %9s %9s\n' archive image "KiB-root" "KiB-tar" | tee "$outdir/sizes.txt"
  trap 'rm -rf "$tmp"' EXIT
  local path="PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

  rootfs "$tmp/hybridnet" "target/$profile" "$static"
  # The same configuration as the Dockerfile's final stage.
  oci_archive hybridnet "$image" "$tmp/hybridnet" --config.env "$path" \
    --config.user "$user:$group" --config.cmd hybridnet-operator

  mkdir -p "$tmp/pause"
  install -m 0755 "$static/hybridnet-pause" "$tmp/pause/pause"
  strip --strip-debug "$tmp/pause/pause"
  oci_archive pause "$registry/hybridnet-pause:$tag" "$tmp/pause" --config.user 65535:65535 --config.entrypoint /pause

  local labels
  mkdir -p "$tmp/bundle"
  mapfile -t labels < <(bundle_from_dockerfile "$tmp/bundle")
  oci_archive bundle "$registry/hybridnet-operator-bundle:$tag" "$tmp/bundle" "${labels[@]}"
  echo "images: $(cd "$outdir" && ls ./*.oci.tar | tr '\n' ' ')in $outdir (sizes in $outdir/sizes.txt)"
}

case "${1:-}" in
  images) shift; images "$@" ;;
  rootfs) shift; [ $# -eq 3 ] || die "usage: build.sh rootfs OUT BIN_DIR STATIC_DIR"; rootfs "$@" ;;
  digest) shift; [ $# -eq 1 ] || die "usage: build.sh digest ARCHIVE"
    tar -xOf "$1" ./index.json | manifest_digest ;;
  *) die "usage: build.sh images [debug|release] | build.sh rootfs OUT BIN_DIR STATIC_DIR | build.sh digest ARCHIVE" ;;
esac
