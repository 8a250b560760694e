package runner

import (
	"errors"
	"fmt"
	"hash/fnv"
	"os/user"
	"strconv"
)

// Dynamic users are systemd's DynamicUser= without systemd: a unit whose
// named account does not exist still gets a uid (and a gid of the same
// number) no other account or unit has, so helpers that fall back stay
// apart. The range is systemd's, so the two never hand out ids that an
// admin's own accounts could use.
const (
	DynamicUIDMin = 61184 // 0xEF00, systemd's DYNAMIC_UID_MIN
	DynamicUIDMax = 65519 // 0xFFEF, systemd's DYNAMIC_UID_MAX
)

// dynamicStart is where the search for name's id begins: the same name
// gets the same id on every run (so its state directory keeps its owner)
// unless that id became taken.
func dynamicStart(name string) uint32 {
	h := fnv.New32a()
	h.Write([]byte("sluice dynamic user\x00" + name))
	return DynamicUIDMin + h.Sum32()%(DynamicUIDMax-DynamicUIDMin+1)
}

// allocateDynamic gives each unit in pending its id: the first free one
// from dynamicStart(name) on, wrapping around the range. Free means: no
// unit of this runner has it as uid or gid, and inUse (the passwd and
// group databases) says no account or group has it. Units naming the same
// user share its id, as systemd's do.
//
// reserve, when set, must then take the id for the user's name (see
// reserveUID); false means someone outside this runner holds it, and the
// search goes on.
func allocateDynamic(units, pending []*unit, inUse func(uint32) bool, reserve func(id uint32, name string) (bool, error)) error {
	taken := map[uint32]bool{}
	for _, u := range units {
		if !u.id.dynamic {
			taken[u.id.uid], taken[u.id.gid] = true, true
		}
	}
	byName := map[string]uint32{}
	const span = DynamicUIDMax - DynamicUIDMin + 1
	for _, u := range pending {
		id, ok := byName[u.id.name]
		if !ok {
			start := dynamicStart(u.id.name)
			for i := uint32(0); i < span; i++ {
				c := DynamicUIDMin + (start-DynamicUIDMin+i)%span
				if taken[c] || inUse(c) {
					continue
				}
				if reserve != nil {
					got, err := reserve(c, u.id.name)
					if err != nil {
						return err
					}
					if !got {
						continue
					}
				}
				id, ok = c, true
				break
			}
			if !ok {
				return fmt.Errorf("runner: unit %s: no free id left in %d-%d for dynamic user %s",
					u.cfg.Name, DynamicUIDMin, DynamicUIDMax, u.id.name)
			}
			byName[u.id.name] = id
			taken[id] = true
		}
		u.id.uid, u.id.gid = id, id
	}
	return nil
}

// idInUse asks the system's user and group databases (through NSS, as
// the runner is built with cgo) whether id is anyone's uid or gid. A
// lookup that fails for another reason than "unknown" counts as in use.
func idInUse(id uint32) bool {
	s := strconv.FormatUint(uint64(id), 10)
	if _, err := user.LookupId(s); !errors.As(err, new(user.UnknownUserIdError)) {
		return true
	}
	_, err := user.LookupGroupId(s)
	return !errors.As(err, new(user.UnknownGroupIdError))
}
