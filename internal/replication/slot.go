package replication

import "strconv"

// clusterSlots is how many hash slots a Redis Cluster has.
const clusterSlots = 16384

// Slot is the Cluster hash slot of a key with no hash tag (or of a tag):
// CRC16 (XMODEM) of it, modulo 16384.
func Slot(s string) int {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc ^= uint16(s[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc) % clusterSlots
}

// TagForSlot returns a short hash tag that falls in slot: a key holding
// "{tag}" is served by the node that owns the slot.
func TagForSlot(slot int) string {
	slot = (slot%clusterSlots + clusterSlots) % clusterSlots
	for i := 0; ; i++ {
		tag := strconv.Itoa(i)
		if Slot(tag) == slot {
			return tag
		}
	}
}
