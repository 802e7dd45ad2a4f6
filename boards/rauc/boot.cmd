# U-Boot boot script for Vaxelbox's A/B root file systems (RAUC's `uboot` boot
# selection, every real board in boards/). Make boot.scr from it:
#   mkimage -A arm64 -T script -C none -n "Vaxelbox A/B" -d boot.cmd boot.scr
# and put boot.scr on partition 1 of the boot medium, where U-Boot's distro boot
# finds it (it sets devtype, devnum). Layout: 1 boot (FAT), 2 rootfs A, 3 rootfs B,
# 4 data (/var/lib/vaxelbox, /var/lib/rauc). The kernel is the slot's /boot/Image,
# so a kernel update comes with the slot.
#
# RAUC owns BOOT_ORDER and BOOT_<A|B>_LEFT (fw_setenv, see fw_env.config):
# installing a bundle puts the new slot first with boot-attempts-primary (1:
# one try); `rauc status mark-good` gives it boot-attempts again, mark-bad 0.
# A crash that reboots, a hang the watchdog resets, or a power cut during the
# trial use up the try, and the next boot takes the other slot.
test -n "${BOOT_ORDER}" || setenv BOOT_ORDER "A B"
test -n "${BOOT_A_LEFT}" || setenv BOOT_A_LEFT 3
test -n "${BOOT_B_LEFT}" || setenv BOOT_B_LEFT 3

setenv vx_slot
for BOOT_SLOT in "${BOOT_ORDER}"; do
  if test "x${vx_slot}" != "x"; then
    # already chose one
  elif test "x${BOOT_SLOT}" = "xA" && test ${BOOT_A_LEFT} -gt 0; then
    setexpr BOOT_A_LEFT ${BOOT_A_LEFT} - 1
    setenv vx_slot A
    setenv vx_part 2
  elif test "x${BOOT_SLOT}" = "xB" && test ${BOOT_B_LEFT} -gt 0; then
    setexpr BOOT_B_LEFT ${BOOT_B_LEFT} - 1
    setenv vx_slot B
    setenv vx_part 3
  fi
done

if test "x${vx_slot}" = "x"; then
  echo "No slot has boot attempts left: both get 3 again"
  setenv BOOT_A_LEFT 3
  setenv BOOT_B_LEFT 3
  saveenv
  reset
fi
saveenv  # the attempt is spent before the kernel starts: a power cut now counts

echo "Booting slot ${vx_slot} (${devtype} ${devnum}:${vx_part})"
part uuid ${devtype} ${devnum}:${vx_part} vx_uuid
load ${devtype} ${devnum}:${vx_part} ${kernel_addr_r} /boot/Image
if test -n "${fdt_addr}"; then
  setenv vx_fdt ${fdt_addr}  # Raspberry Pi: the firmware's device tree (config.txt overlays applied)
else
  load ${devtype} ${devnum}:${vx_part} ${fdt_addr_r} /boot/dtbs/${fdtfile}
  setenv vx_fdt ${fdt_addr_r}
fi
setenv bootargs "${bootargs} root=PARTUUID=${vx_uuid} rootwait ro rauc.slot=${vx_slot}"
booti ${kernel_addr_r} - ${vx_fdt}
