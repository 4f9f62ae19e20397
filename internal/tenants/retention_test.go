package tenants

import (
	"strings"
	"testing"
	"time"
)

func TestATenantsRetentionIsItsOwnWithinTheGateways(t *testing.T) {
	const day = 24 * time.Hour
	s := &Store{MaxRetention: 30 * day, MaxRecordingRetention: 14 * day}
	base := Settings{QuietHours: "off", CrisisInQuietHours: CrisisSend, TimeZone: "UTC"}
	for _, c := range []struct {
		msg, rec int
		field    string
	}{{0, 0, ""}, {7, 3, ""}, {30, 14, ""}, {31, 0, "retention_days"}, {-1, 0, "retention_days"},
		{0, 15, "recording_retention_days"}, {7, 10, "recording_retention_days"}} {
		set := base
		set.RetentionDays, set.RecordingRetentionDays = c.msg, c.rec
		err := s.Check(set)
		switch {
		case c.field == "" && err != nil:
			t.Errorf("%d/%d refused: %v", c.msg, c.rec, err)
		case c.field != "" && (err == nil || !strings.HasPrefix(err.Error(), c.field+":")):
			t.Errorf("%d/%d: %v, want an error naming %s", c.msg, c.rec, err, c.field)
		}
	}
	set := base
	if set.Retention(30*day) != 30*day || set.RecordingRetention(14*day, 30*day) != 14*day {
		t.Error("no setting: the gateway's retentions")
	}
	set.RetentionDays = 7
	if set.Retention(30*day) != 7*day || set.RecordingRetention(14*day, 30*day) != 7*day {
		t.Error("a week: messages and recordings a week")
	}
	set.RecordingRetentionDays = 2
	if set.RecordingRetention(14*day, 30*day) != 2*day {
		t.Error("recordings two days")
	}
}
