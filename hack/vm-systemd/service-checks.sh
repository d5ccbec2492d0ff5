# Sourced by the systemd-node VM's test scripts (smoke.sh, node-tests.sh;
# build-image.sh installs it as /usr/local/lib/berth-vm-test/service-checks.sh):
# the checks of berthd's unit and journal that both make, written once.
# POSIX sh (smoke.sh is not bash). Uses the caller's `check NAME EXPR`.

# service_checks: berthd is active (READY=1 arrived), its unit is set up as
# packaged (Type=notify, KillMode=process, Delegate=yes, a 1 min watchdog),
# and it logs to the journal with priorities and without its own timestamps.
service_checks() {
    check "berthd is active (READY=1 received)" '[ "$(systemctl is-active berthd)" = active ]'
    check "Type=notify" '[ "$(systemctl show -p Type --value berthd)" = notify ]'
    check "KillMode=process" '[ "$(systemctl show -p KillMode --value berthd)" = process ]'
    check "Delegate=yes" '[ "$(systemctl show -p Delegate --value berthd)" = yes ]'
    check "watchdog armed" '[ "$(systemctl show -p WatchdogUSec --value berthd)" = 1min ]'
    check "journal has berthd at info priority" 'journalctl -u berthd -p info -o cat | grep -q "CRI server listening"'
    check "no timestamp in journal messages" '! journalctl -u berthd -o cat | grep -qE "^[0-9]{4}-[0-9]{2}-[0-9]{2}T"'
    check "journald consumed the <N> prefixes" '! journalctl -u berthd -o cat | grep -q "^<[0-9]>"'
}
