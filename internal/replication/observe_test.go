package replication

import (
	"testing"
	"time"
)

const info = `# Replication
role:master
connected_slaves:3
slave0:ip=127.0.0.1,port=7001,state=online,offset=5210,lag=0
slave1:ip=127.0.0.1,port=7002,state=wait_bgsave,offset=0,lag=0
slave2:ip=127.0.0.1,port=7003,state=online,offset=5210,lag=1
master_failover_state:no-failover
master_replid:9321109a6c931fac79c1e5d9c6c8f2bd8ed1d762
master_replid2:0000000000000000000000000000000000000000
master_repl_offset:5210
`

func TestTheReplicationOfAPrimaryIsReadFromINFO(t *testing.T) {
	replid, online := parseReplication(info)
	if replid != "9321109a6c931fac79c1e5d9c6c8f2bd8ed1d762" || online != 2 {
		t.Fatalf("replid %q, %d online; want 2 (a replica still synchronising cannot acknowledge)", replid, online)
	}
}

func TestAFenceWaitsForEveryReplicaItSawLatelyAndNoticesANewPrimary(t *testing.T) {
	now := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	f := New(nil, Options{Replicas: 1, Hold: 5 * time.Second, Now: func() time.Time { return now }})
	steps := []struct {
		name    string
		advance time.Duration
		replid  string
		online  int
		changed bool
		need    int
	}{
		{"the first primary seen, with two replicas", 0, "A", 2, false, 2},
		{"a replica leaves: it may have been promoted, so it is still waited for", time.Second, "A", 1, false, 2},
		{"still within the hold time", 4 * time.Second, "A", 1, false, 2},
		{"gone for the hold time: the primary is writable with the one left", 2 * time.Second, "A", 1, false, 1},
		{"a replica joins", time.Second, "A", 2, false, 2},
		{"one that leaves and comes back within the hold time was waited for throughout", time.Second, "A", 1, false, 2},
		{"back", time.Second, "A", 2, false, 2},
		{"another primary (a failover): the epoch moves on", time.Second, "B", 1, true, 1},
		{"the same primary again", time.Second, "B", 1, false, 1},
		{"never fewer than asked", time.Second, "B", 0, false, 1},
	}
	var epoch Epoch
	for _, s := range steps {
		now = now.Add(s.advance)
		changed, need := f.observe("", s.replid, s.online)
		if changed != s.changed || need != s.need {
			t.Fatalf("%s: changed %v, need %d; want %v, %d", s.name, changed, need, s.changed, s.need)
		}
		if s.changed {
			if f.Begin() == epoch {
				t.Fatalf("%s: the epoch did not move", s.name)
			}
			epoch = f.Begin()
		} else if f.Begin() != epoch {
			t.Fatalf("%s: the epoch moved", s.name)
		}
	}
}

func TestOnClusterAPrimaryUnderANewAddressIsAFailover(t *testing.T) {
	f := New(nil, Options{Replicas: 1})
	for _, addr := range []string{"10.0.0.1:6379", "10.0.0.2:6379"} {
		if changed, _ := f.observe(addr, "replid of "+addr, 1); changed {
			t.Fatal("the primaries first seen are no failover")
		}
	}
	f.seen = true // as Wait marks it after its first round
	if changed, _ := f.observe("10.0.0.3:6379", "C", 1); !changed {
		t.Fatal("a primary under a new address, after the first, is a replica promoted")
	}
}
