#!/usr/bin/env bash
# tools/fresh-debian.sh: try the README's two set-up commands as a newcomer would, on a
# freshly built minimal Debian (issue 17).
#
#   tools/fresh-debian.sh [OPTIONS] SUITE          SUITE is bookworm (12) or trixie (13)
#   tools/fresh-debian.sh --shell 'CMD' SUITE      run CMD (bash, as root, in the clone) in
#                                                  the system the last run left behind,
#                                                  with the same mounts
#
# Options:
#   --source DIR    the repository to clone (default: /work/main)
#   --rev REV       the commit of it to try (default: HEAD of --source; its committed
#                   state only: uncommitted edits are not part of a clone)
#   --timeout SECS  limit for each command (default 3600)
#   --rebuild       build the base system again even if one is cached
#   --no-host-ca    do not copy the host's /usr/local/share/ca-certificates/*.crt in
#                   (needed only behind a TLS-inspecting proxy; see below)
#   --chroot        enter the system with plain chroot(8) instead of pivot_root(8), to
#                   compare (unshare(CLONE_NEWUSER) then fails with EPERM; see below)
#
# What it does, as root on a Debian host:
#   1. installs mmdebstrap on the host if it is missing;
#   2. builds `mmdebstrap --variant=minbase SUITE` once into /var/tmp/fresh-SUITE/base and
#      keeps it untouched as a cache; every run starts from a fresh copy of it in
#      /var/tmp/fresh-SUITE/root, so one run's packages never leak into the next;
#   3. clones the repository on the host into ROOT/root/unotifyd: minimal Debian has no
#      git, and installing it first would make the system less minimal than the one
#      the README is tried on (a newcomer has to `apt-get install git` before cloning);
#   4. in a private mount and PID namespace, mounts what a booted Debian has (see
#      stage 2), enters the system, and runs the two commands of the README's first code
#      block exactly as written, from the clone, in a root login shell; then a few probes
#      of what the rest of the README takes for granted (git, man, unotifyd on PATH);
#   5. unmounts everything, and checks that nothing is left mounted.
#
# Logs: /var/tmp/fresh-SUITE-build.log (mmdebstrap), -cmd1.log and -cmd2.log (the README's
# commands), -probe.log, and -summary.log (commands, exit codes, times, probes).
#
# It writes only under /var/tmp/fresh-SUITE* (and installs mmdebstrap with apt-get).
set -euo pipefail

# Everything is in functions and the last line calls main: bash then reads the whole file
# before running any of it, so editing the script during a run cannot derail that run.

die() { echo "fresh-debian: $*" >&2; exit 2; }
say() { echo "fresh-debian: $*" >&2; }

# The PATH of a root login shell on Debian (/etc/profile), also used for our own tools.
ROOT_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH=$ROOT_PATH

# ---------------------------------------------------------------------------------------
# Stage 2: inside `unshare --mount --pid --fork`. Everything mounted here lives only in
# this private mount namespace, so the host's mount table never sees it, and it all goes
# away with the namespace even if this script is killed. Being PID 1 of a new PID
# namespace also means that when this stage ends the kernel kills every process the
# tests may have left behind: nothing outlives a run.
# ---------------------------------------------------------------------------------------
mounted=() # global: the EXIT trap runs after stage2 has returned

unmount_all() {
    local i
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
        # A lazy unmount only if a straggler still holds the mount busy; the namespace,
        # and with it the mount, disappears when we exit anyway.
        umount "${mounted[i]}" 2>/dev/null || umount -l "${mounted[i]}" ||
            echo "fresh-debian: could not unmount ${mounted[i]}" >&2
    done
    mounted=()
}

# mnt ARGS... TARGET: mount, and remember TARGET for unmount_all.
mnt() { mount "$@"; mounted+=("${!#}"); }

stage2() {
    local root=$FRESH_ROOT mode=$1
    trap unmount_all EXIT

    # Belt and braces: unshare already made every mount private, so nothing mounted
    # below can propagate back to the host.
    mount --make-rprivate /

    # The root must be a mount point, as a booted system's / always is, so bind the
    # root file system onto itself. pivot_root(2), which commands enter the system with,
    # needs it; and in a plain chroot whose root is a mere directory, runc's first step,
    # making / a slave mount, fails ("error preparing rootfs: mount /, flags: 0x84000:
    # invalid argument") and so does every OCI test.
    mnt --bind "$root" "$root"
    # A /proc of our own PID namespace.
    mnt -t proc proc "$root/proc"
    # A fresh sysfs has an empty /sys/fs/cgroup; Debian 12 and 13 boot with the unified
    # cgroup2 hierarchy there, and runc needs it ("no cgroup mount found in mountinfo"
    # and every OCI test fails without it; the host's own cgroup layout is not carried
    # over). The tests' containers create and remove their cgroups in it.
    mnt -t sysfs sysfs "$root/sys"
    mnt -t cgroup2 cgroup2 "$root/sys/fs/cgroup"
    # /dev as booted Debian has it: the kernel's devtmpfs (a second mount of the same
    # one the host has; the tests only open /dev/null, /dev/kmsg and the like),
    # a devpts instance of our own for the terminal tests, and a tmpfs on /dev/shm.
    mnt -t devtmpfs devtmpfs "$root/dev"
    mnt -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5 devpts "$root/dev/pts"
    mnt --bind "$root/dev/pts/ptmx" "$root/dev/ptmx"
    mnt -t tmpfs -o mode=1777,nosuid,nodev shm "$root/dev/shm"
    # /run is a tmpfs on every booted Debian (unotifyd keeps --private scratch trees in
    # /run/unotifyd when root); systemd would create /run/lock in it.
    mnt -t tmpfs -o mode=0755,nosuid,nodev run "$root/run"
    install -d -m 1777 "$root/run/lock"
    # /tmp a tmpfs with the options of systemd's tmp.mount, the same in Debian 12 (where
    # an administrator enables it) and 13 (where it is the default): note nosuid.
    mnt -t tmpfs -o mode=1777,strictatime,nosuid,nodev,size=50%,nr_inodes=1m tmp "$root/tmp"

    # How a command enters the system. Not chroot(8) by default: the kernel refuses
    # unshare(CLONE_NEWUSER) to a chrooted process (EPERM), which a booted system allows
    # and the tests use, and a chrooted process sees the host's mounts in
    # /proc/self/mountinfo. So each command gets a mount namespace of its own in which
    # the system's root becomes the root of the namespace (pivot_root . .) and the
    # host's file system is detached (umount -l ., the guest's umount).
    local -a enter
    if ((FRESH_CHROOT)); then
        enter=(chroot "$root")
    else
        enter=(unshare --mount --propagation private /bin/sh -c
            'cd "$0" && pivot_root . . && umount -l . && exec "$@"' "$root")
    fi
    # A clean environment, as after logging in as root on the console.
    local -a login=(env -i HOME=/root USER=root LOGNAME=root SHELL=/bin/bash TERM=dumb
        PATH="$ROOT_PATH")

    # in_root LOG CMD: run CMD in a root login shell in the clone; output to LOG and to
    # stderr; exit code and time to the summary.
    in_root() {
        local log=$1 cmd=$2 start rc
        start=$(date +%s)
        set +e
        "${login[@]}" timeout -k 30 "$FRESH_TIMEOUT" "${enter[@]}" \
            /bin/bash -lc "cd /root/unotifyd && $cmd" </dev/null 2>&1 | tee "$log" >&2
        rc=${PIPESTATUS[0]}
        set -e
        printf 'exit %s after %s s: %s\n' "$rc" "$(($(date +%s) - start))" "$cmd" >>"$FRESH_SUMMARY"
        return "$rc"
    }

    local status=0
    if [ "$mode" = shell ]; then
        in_root /dev/null "$FRESH_SHELL_CMD" || status=$?
        return "$status"
    fi

    local i=0 cmd
    while IFS= read -r cmd; do
        i=$((i + 1))
        say "README command $i: $cmd"
        in_root "$FRESH_LOGS-cmd$i.log" "$cmd" || status=1
    done <"$FRESH_COMMANDS"

    # Probes of what the rest of the README takes for granted; their failures are
    # findings, not failures of this script. Each in a login shell of its own, as a
    # user would type them after the set-up.
    : >"$FRESH_LOGS-probe.log"
    local probe
    for probe in \
        'command -v git || echo "git: not installed"' \
        'command -v man || echo "man: not installed"' \
        'command -v unotifyd || echo "unotifyd: not on PATH"' \
        'unotifyd --version' \
        'unotifyd launch --redirect /etc/passwd=/etc/hostname -- cat /etc/passwd' \
        'python3 -c "import trio" && echo "trio importable by /usr/bin/python3"'; do
        {
            echo "\$ $probe"
            "${login[@]}" timeout -k 5 60 "${enter[@]}" \
                /bin/bash -lc "cd /root/unotifyd && $probe" </dev/null 2>&1 || echo "(exit $?)"
        } >>"$FRESH_LOGS-probe.log"
    done
    return "$status"
}

# ---------------------------------------------------------------------------------------
# Stage 1: on the host.
# ---------------------------------------------------------------------------------------
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

main() {
    local source_dir=/work/main rev=HEAD timeout=3600 rebuild=0 host_ca=1 chroot=0
    local shell_cmd= suite=
    while (($#)); do
        case $1 in
            --source) source_dir=${2:?}; shift 2 ;;
            --rev) rev=${2:?}; shift 2 ;;
            --timeout) timeout=${2:?}; shift 2 ;;
            --rebuild) rebuild=1; shift ;;
            --no-host-ca) host_ca=0; shift ;;
            --chroot) chroot=1; shift ;;
            --shell) shell_cmd=${2:?}; shift 2 ;;
            -h | --help) usage; exit 0 ;;
            -*) die "unknown option $1 (try --help)" ;;
            *) [ -z "$suite" ] || die "one suite at a time"; suite=$1; shift ;;
        esac
    done
    case $suite in
        bookworm | trixie) ;;
        *) die "SUITE must be bookworm or trixie (try --help)" ;;
    esac
    [ "$(id -u)" = 0 ] || die "must run as root (mmdebstrap, mount and pivot_root need it)"
    [[ $timeout =~ ^[0-9]+$ ]] || die "--timeout takes seconds"

    local state=/var/tmp/fresh-$suite # our directory: base/ (the cache), root/ (this run's)
    local logs=/var/tmp/fresh-$suite  # log prefix: /var/tmp/fresh-SUITE-*.log
    local base=$state/base root=$state/root
    mkdir -p "$state"

    # Nothing of ours may be mounted on the host: all mounts live in stage 2's namespace.
    # Checked before anything under $state is deleted, and again at the end.
    check_unmounted() {
        if findmnt -rn -o TARGET | grep -F "$state" >&2; then
            die "the mounts above are still there; not touching $state"
        fi
    }
    check_unmounted

    # Stage 2 runs a copy of this script kept in our own directory, so that the work
    # tree's copy can change while a run is going on.
    local self=$state/fresh-debian.sh
    install -m 0755 "$0" "$self.new" && mv "$self.new" "$self"

    export FRESH_ROOT=$root FRESH_TIMEOUT=$timeout FRESH_LOGS=$logs FRESH_CHROOT=$chroot
    export FRESH_SUMMARY=$logs-summary.log FRESH_COMMANDS=$state/commands

    run_stage2() {
        # --kill-child: if this host-side script dies, stage 2 (PID 1 of the new
        # namespace) is killed, and with it every process in the namespace.
        unshare --mount --propagation private --pid --fork --kill-child \
            /bin/bash "$self" --stage2 "$@"
    }

    local rc
    if [ -n "$shell_cmd" ]; then
        [ -x "$root/bin/bash" ] && [ -d "$root/root/unotifyd" ] || die "no run of $suite to enter yet"
        FRESH_SUMMARY=/dev/null FRESH_SHELL_CMD=$shell_cmd run_stage2 shell && rc=0 || rc=$?
        check_unmounted
        exit "$rc"
    fi

    # 1. mmdebstrap on the host.
    if ! command -v mmdebstrap >/dev/null; then
        say "installing mmdebstrap on the host"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >/dev/null
    fi

    # 2. The base system, built once. mmdebstrap's default sources for a suite are
    # Debian's archive with SUITE, SUITE-updates and SUITE-security, as a new install's.
    # Built under a temporary name, so that an interrupted build is never taken for a
    # finished one.
    if ((rebuild)) || [ ! -e "$base/.fresh-debian-complete" ]; then
        say "building minimal $suite in $base (log: $logs-build.log)"
        rm -rf --one-file-system "$base" "$base.tmp"
        mmdebstrap --mode=root --variant=minbase "$suite" "$base.tmp" >"$logs-build.log" 2>&1 ||
            die "mmdebstrap failed; see $logs-build.log"
        touch "$base.tmp/.fresh-debian-complete"
        mv "$base.tmp" "$base"
    else
        say "reusing minimal $suite built in $base (--rebuild to build it again)"
    fi

    # A fresh copy of it for this run; the previous run's copy is deleted first (it was
    # kept for --shell). --one-file-system: never descend into anything mounted there.
    say "copying it to $root"
    rm -rf --one-file-system "$root"
    cp -a "$base" "$root"
    rm -f "$root/.fresh-debian-complete"
    # Name resolution for apt and pip: the host's resolver configuration (its contents,
    # even if the host's file is a link).
    cat /etc/resolv.conf >"$root/etc/resolv.conf"
    # If the host reaches the internet through a TLS-inspecting proxy, it trusts the
    # proxy's CA through certificates in /usr/local/share/ca-certificates, and pip in the
    # fresh system fails with CERTIFICATE_VERIFY_FAILED without them. Put them where a
    # local administrator would: minimal Debian has no ca-certificates yet, and when the
    # README's first command installs it, its update-ca-certificates adds them to the
    # system's bundle. Nothing else of the system changes. --no-host-ca to skip.
    local ca_note=
    if ((host_ca)) && compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
        install -d "$root/usr/local/share/ca-certificates"
        install -m 0644 /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
        ca_note="the host's $(cd "$root/usr/local/share/ca-certificates" && echo *.crt) in /usr/local/share/ca-certificates"
    fi

    # 3. The clone, where a root user naturally puts one: /root (mode 0700) on minimal
    # Debian. --no-local copies objects instead of hard-linking into the source.
    local commit
    commit=$(git -C "$source_dir" rev-parse --verify "$rev^{commit}") ||
        die "$rev is not a commit of $source_dir"
    say "cloning $source_dir at $commit into $root/root/unotifyd"
    git clone -q --no-local "$source_dir" "$root/root/unotifyd"
    git -C "$root/root/unotifyd" -c advice.detachedHead=false checkout -q --detach "$commit"

    # 4. The README's set-up commands: the lines of its first fenced code block, which
    # the README asks to run from the clone. Taken from the clone's README, i.e. as of
    # the commit tried.
    awk '/^```/ { if (inblock) exit; inblock = 1; next } inblock && NF' \
        "$root/root/unotifyd/README.md" >"$FRESH_COMMANDS"
    [ -s "$FRESH_COMMANDS" ] || die "no commands found in the README's first code block"

    {
        echo "suite: $suite (mmdebstrap --variant=minbase, built $(date -r "$base" -u '+%F %T UTC'))"
        echo "host kernel: $(uname -r)"
        echo "clone: $source_dir at $commit in /root/unotifyd"
        echo "extra CA certificates: ${ca_note:-none}"
        echo "entered with: $( ((chroot)) && echo chroot || echo pivot_root)"
        echo "README commands, run in a root login shell in /root/unotifyd:"
        sed 's/^/  /' "$FRESH_COMMANDS"
    } >"$FRESH_SUMMARY"
    cat "$FRESH_SUMMARY" >&2

    run_stage2 run && rc=0 || rc=$?

    # 5. Stage 2 unmounted everything (and its namespace is gone); check anyway.
    check_unmounted
    echo "probes (see $logs-probe.log):" >>"$FRESH_SUMMARY"
    sed 's/^/  /' "$logs-probe.log" >>"$FRESH_SUMMARY"
    say "done (exit $rc); logs: $logs-{build,cmd1,cmd2,probe,summary}.log; system kept in $root"
    cat "$FRESH_SUMMARY"
    exit "$rc"
}

if [ "${1-}" = --stage2 ]; then
    shift
    stage2 "$@"
    exit
fi
main "$@"
