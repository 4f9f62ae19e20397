package broadcasts_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/internal/audiences"
	"github.com/patientmsg/gateway/internal/broadcasts"
	"github.com/patientmsg/gateway/internal/ledger"
	"github.com/patientmsg/gateway/internal/messaging"
	"github.com/patientmsg/gateway/internal/redistest"
	"github.com/patientmsg/gateway/workers"
)

// clock is a clock the test moves.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }

func (c *clock) Advance(d time.Duration) { c.mu.Lock(); c.now = c.now.Add(d); c.mu.Unlock() }

// named is a channel that only has a name: the engine never sends, it
// queues (the workers send).
type named string

func (n named) Name() string { return string(n) }
func (n named) Send(context.Context, channels.Message) (channels.Result, error) {
	return channels.Result{}, nil
}

// rig is an engine on a throwaway Redis with a clock the test moves and
// channels that only have names (the engine queues; workers would send).
type rig struct {
	clk   *clock
	led   *ledger.Ledger
	insp  *asynq.Inspector
	store *broadcasts.Store
	eng   *broadcasts.Engine
	rdb   *redis.Client
}

func newRig(t *testing.T, channelNames ...string) *rig {
	t.Helper()
	rdb := redistest.Start(t).Client()
	r := &rig{clk: &clock{now: time.Now().UTC().Truncate(time.Second)}, led: ledger.New(rdb, 24*time.Hour),
		insp: asynq.NewInspectorFromRedisClient(rdb), store: broadcasts.NewStore(rdb, 24*time.Hour), rdb: rdb}
	q := asynq.NewClientFromRedisClient(rdb)
	var chs []channels.Channel
	for _, n := range channelNames {
		chs = append(chs, named(n))
	}
	reg := channels.NewRegistry(chs...)
	msgs := &messaging.Service{Ledger: r.led, Queue: q, Channels: reg, Now: r.clk.Now}
	r.eng = (&broadcasts.Engine{Messages: msgs, Store: r.store, Audiences: audiences.NewStore(rdb, audiences.DefaultTTL),
		Queue: q, Channels: reg, Now: r.clk.Now}).Init()
	return r
}

// started creates a broadcast of tenant clinic-a and fans its first chunk
// out, as the fan-out task would.
// closedToday starts an SMS-then-voice broadcast to n people
// (+14155550100 on), and returns it with person i's first message id and
// link.
func (rg *rig) closedToday(t *testing.T, n int) (cfg *broadcasts.Config, msg, link func(i int) string) {
	t.Helper()
	var people []audiences.Recipient
	for i := range n {
		people = append(people, audiences.Recipient{Phone: fmt.Sprintf("+1415555010%d", i)})
	}
	cfg = rg.started(t, &broadcasts.Request{Name: "Closed", Channels: []string{"sms", "voice"},
		Body: map[string]string{"en": "The clinic is closed today."}, AckTimeout: "10m", Audience: people})
	msg = func(i int) string { return rg.person(t, cfg.ID, i).Tries[0].MessageID }
	link = func(i int) string { return cfg.ID + ":" + strconv.Itoa(i) }
	return cfg, msg, link
}

func (rg *rig) started(t *testing.T, req *broadcasts.Request) *broadcasts.Config {
	t.Helper()
	ctx := context.Background()
	cfg, err := rg.eng.Create(ctx, "clinic-a", req)
	if err != nil {
		t.Fatal(err)
	}
	if err := rg.eng.Fanout(ctx, workers.BroadcastPayload{Broadcast: cfg.ID, Chunk: 0}); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// person reads person i of a broadcast.
func (rg *rig) person(t *testing.T, id string, i int) *broadcasts.Person {
	t.Helper()
	p, _, err := rg.store.Person(context.Background(), id, i)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestTheCascadeMovesOnlyThoseWhoDidNotAnswerWhenTheClockPassesTheirDeadline
// drives the engine's fan-out, sweep and answers by hand, with a clock the
// test moves: nothing waits for wall time, and "nothing happened" is
// checked at a known instant rather than after a sleep.
func TestTheCascadeMovesOnlyThoseWhoDidNotAnswerWhenTheClockPassesTheirDeadline(t *testing.T) {
	ctx := context.Background()
	rg := newRig(t, "sms", "voice")
	clk, msgs, eng := rg.clk, rg.eng.Messages, rg.eng

	cfg := rg.started(t, &broadcasts.Request{Name: "Flood", Channels: []string{"sms", "voice"},
		Body:       map[string]string{"en": "Flooding near the hospital. Reply 1 if you are safe, 2 if you need help."},
		Poll:       &broadcasts.Poll{Options: map[string]string{"1": "safe", "2": "need_help"}},
		AckTimeout: "10m", Audience: []audiences.Recipient{{Phone: "+14155550101"}, {Phone: "+14155550102"}}})
	person := func(i int) *broadcasts.Person { return rg.person(t, cfg.ID, i) }
	channelsTried := func(p *broadcasts.Person) (out []string) {
		for _, tr := range p.Tries {
			out = append(out, tr.Channel)
		}
		return out
	}
	for i := range 2 {
		if p := person(i); p.State != broadcasts.PersonQueued || len(p.Tries) != 1 || p.Tries[0].Channel != "sms" {
			t.Fatalf("person %d after the fan-out: %s %v", i, p.State, channelsTried(p))
		}
	}

	// A minute before the deadline, the sweep moves nobody.
	clk.Advance(9 * time.Minute)
	if err := eng.Sweep(ctx, cfg.ID); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if p := person(i); len(p.Tries) != 1 {
			t.Fatalf("person %d moved on before their deadline: %v", i, channelsTried(p))
		}
	}
	// The second person answers by SMS.
	p1 := person(1)
	if err := eng.Answer(ctx, cfg.ID+":"+strconv.Itoa(p1.Index), p1.Tries[0].MessageID, "sms", "safe", "", clk.Now()); err != nil {
		t.Fatal(err)
	}

	// Past the deadline: the one who did not answer is called, the one who
	// did is left alone.
	clk.Advance(2 * time.Minute)
	if err := eng.Sweep(ctx, cfg.ID); err != nil {
		t.Fatal(err)
	}
	if p := person(0); p.State != broadcasts.PersonQueued || len(p.Tries) != 2 || p.Tries[1].Channel != "voice" ||
		p.Tries[0].Status != string(ledger.StatusCanceled) {
		t.Fatalf("the silent person: %s %v %+v", p.State, channelsTried(p), p.Tries)
	}
	if p := person(1); p.State != broadcasts.PersonAcknowledged || p.Answer != "safe" || len(p.Tries) != 1 {
		t.Fatalf("the person who answered: %s %q %v", p.State, p.Answer, channelsTried(p))
	}
	// The canceled SMS is canceled in the ledger too, so no worker sends
	// it, and its history says why.
	m, err := msgs.Ledger.Get(ctx, "clinic-a", person(0).Tries[0].MessageID)
	if err != nil || m.Status != ledger.StatusCanceled {
		t.Fatalf("the timed-out SMS in the ledger: %v %v", m, err)
	}
	if last := m.Events[len(m.Events)-1]; !strings.Contains(last.Detail, "no answer within the broadcast's ack timeout") {
		t.Fatalf("the timed-out SMS's history ends with %q", last.Detail)
	}

	// Past the call's deadline too: no channel is left.
	clk.Advance(11 * time.Minute)
	if err := eng.Sweep(ctx, cfg.ID); err != nil {
		t.Fatal(err)
	}
	if p := person(0); p.State != broadcasts.PersonUnreachable || len(p.Tries) != 2 {
		t.Fatalf("after the last channel: %s %v", p.State, channelsTried(p))
	}
	if p := person(1); p.State != broadcasts.PersonAcknowledged || len(p.Tries) != 1 {
		t.Fatalf("the person who answered changed: %s %v", p.State, channelsTried(p))
	}
}

// TestAFanOutWhoseWorkerDiedIsQueuedAgainWithinALease: a worker killed
// during a fan-out stops saying it runs; the next sweep past the lease
// queues the chunk again, and the run makes everyone's message once.
func TestAFanOutWhoseWorkerDiedIsQueuedAgainWithinALease(t *testing.T) {
	ctx := context.Background()
	rg := newRig(t, "sms")
	clk, insp, store, eng := rg.clk, rg.insp, rg.store, rg.eng
	cfg, err := eng.Create(ctx, "clinic-a", &broadcasts.Request{Name: "Recall", Channels: []string{"sms"},
		Body: map[string]string{"en": "All staff: report to the emergency department."}, AckTimeout: "10m",
		Audience: []audiences.Recipient{{Phone: "+14155550101"}, {Phone: "+14155550102"}, {Phone: "+14155550103"}}})
	if err != nil {
		t.Fatal(err)
	}
	fanouts := func() (ids []string) {
		t.Helper()
		tasks, err := insp.ListPendingTasks(workers.QueueFor(workers.PriorityHigh))
		if err != nil {
			t.Fatal(err)
		}
		for _, task := range tasks {
			if task.Type == workers.TypeBroadcastFanout {
				ids = append(ids, task.ID)
			}
		}
		return ids
	}
	if got := fanouts(); len(got) != 1 {
		t.Fatalf("fan-out tasks after create: %v", got)
	}
	// A worker starts the chunk, says so, and is killed.
	if err := store.FanoutRunning(ctx, cfg.ID, 0, "worker-1", clk.Now().Add(broadcasts.FanoutLease)); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Second)
	if err := eng.Sweep(ctx, cfg.ID); err != nil {
		t.Fatal(err)
	}
	if got := fanouts(); len(got) != 1 {
		t.Fatalf("a running fan-out was queued again: %v", got)
	}
	clk.Advance(broadcasts.FanoutLease)
	if err := eng.Sweep(ctx, cfg.ID); err != nil {
		t.Fatal(err)
	}
	got := fanouts()
	if len(got) != 2 {
		t.Fatalf("the stalled fan-out was not queued again: %v", got)
	}
	// Both the new task and, later, the dead worker's own run: the people
	// are made and queued once.
	for range 2 {
		if err := eng.Fanout(ctx, workers.BroadcastPayload{Broadcast: cfg.ID, Chunk: 0}); err != nil {
			t.Fatal(err)
		}
	}
	sends, err := insp.ListPendingTasks(workers.QueueFor(workers.PriorityCrisis))
	if err != nil {
		t.Fatal(err)
	}
	if len(sends) != 3 {
		t.Fatalf("%d send tasks for 3 people", len(sends))
	}
	clk.Advance(2 * broadcasts.FanoutLease)
	if err := eng.Sweep(ctx, cfg.ID); err != nil {
		t.Fatal(err)
	}
	if got := fanouts(); len(got) != 2 {
		t.Fatalf("a done chunk was queued again: %v", got)
	}
}

// TestTheRepairPassFinishesWhatAFailureHalfWayLeftUndone stops the status
// path after each of its writes, as a worker dying or Redis failing between
// two writes would, and checks that a retry or the repair pass ends in the
// roster the messages say.
func TestTheRepairPassFinishesWhatAFailureHalfWayLeftUndone(t *testing.T) {
	ctx := context.Background()
	rg := newRig(t, "sms", "voice")
	clk, insp, led, store, eng := rg.clk, rg.insp, rg.led, rg.store, rg.eng
	cfg := rg.started(t, &broadcasts.Request{Name: "Flood", Channels: []string{"sms", "voice"},
		Body: map[string]string{"en": "Flooding near the hospital."}, AckTimeout: "10m",
		Audience: []audiences.Recipient{{Phone: "+14155550101"}, {Phone: "+14155550102"}, {Phone: "+14155550103"}, {Phone: "+14155550104"}}})
	person := func(i int) *broadcasts.Person { return rg.person(t, cfg.ID, i) }
	link := func(i int) string { return cfg.ID + ":" + strconv.Itoa(i) }
	// sent makes a person's first message as a worker does: its record
	// written when its turn comes, claimed and handed to the provider.
	sent := func(i int) string {
		t.Helper()
		id := person(i).Tries[0].MessageID
		if due, err := eng.RecordMessage(ctx, link(i), id); err != nil || !due {
			t.Fatalf("record person %d: %v %v", i, due, err)
		}
		if _, err := led.Claim(ctx, id, time.Minute); err != nil {
			t.Fatal(err)
		}
		if err := led.RecordAccepted(ctx, id, "sms", "SM"+strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
		return id
	}
	report := func(i int, id string, st ledger.Status) {
		t.Helper()
		if _, _, err := led.ApplyProviderUpdateLinked(ctx, id, ledger.ProviderUpdate{Channel: "sms", ProviderID: "SM" + strconv.Itoa(i), Status: st}); err != nil {
			t.Fatal(err)
		}
	}

	// Person 0: the delivery report reached the message, then the roster
	// write failed (the provider does not retry a 5xx).
	m0 := sent(0)
	report(0, m0, ledger.StatusDelivered)
	// Person 1: the failure reached the message and the try, then the move
	// to the next channel failed; the report comes again.
	m1 := sent(1)
	report(1, m1, ledger.StatusUndelivered)
	if _, err := store.Update(ctx, cfg.ID, 1, func(p *broadcasts.Person) (*broadcasts.Event, bool) {
		p.Tries[0].Status = string(ledger.StatusUndelivered)
		return &broadcasts.Event{}, true
	}); err != nil {
		t.Fatal(err)
	}
	if err := eng.Status(ctx, link(1), m1, ledger.StatusUndelivered); err != nil {
		t.Fatal(err)
	}
	if p := person(1); len(p.Tries) != 2 || p.Tries[1].Channel != "voice" {
		t.Fatalf("a repeated failure report did not move the person on: %+v", p.Tries)
	}
	// Person 2: the same, and the report never comes again.
	m2 := sent(2)
	report(2, m2, ledger.StatusFailed)
	if _, err := store.Update(ctx, cfg.ID, 2, func(p *broadcasts.Person) (*broadcasts.Event, bool) {
		p.Tries[0].Status = string(ledger.StatusFailed)
		return &broadcasts.Event{}, true
	}); err != nil {
		t.Fatal(err)
	}
	// Person 3: marked queued, and their send task is gone (lost with a
	// worker, or never written).
	if err := insp.DeleteTask(workers.QueueFor(workers.PriorityCrisis), person(3).Tries[0].MessageID); err != nil {
		t.Fatal(err)
	}

	// Too soon for a queued try without a record: it may be waiting its turn.
	r, err := eng.Repair(ctx, cfg.ID)
	if err != nil {
		t.Fatal(err)
	}
	if r.People != 4 || r.Statuses != 1 || r.MovedOn != 1 || r.Requeued != 0 {
		t.Fatalf("first pass: %+v", r)
	}
	if p := person(0); p.State != broadcasts.PersonAcknowledged || p.Tries[0].Status != string(ledger.StatusDelivered) {
		t.Fatalf("person 0 after the repair: %s %+v", p.State, p.Tries)
	}
	if p := person(2); len(p.Tries) != 2 || p.Tries[1].Channel != "voice" {
		t.Fatalf("person 2 after the repair: %+v", p.Tries)
	}
	clk.Advance(broadcasts.RepairAfter)
	if r, err = eng.Repair(ctx, cfg.ID); err != nil {
		t.Fatal(err)
	}
	if r.Requeued != 1 || r.Statuses != 0 || r.MovedOn != 0 {
		t.Fatalf("second pass: %+v", r)
	}
	if _, err := insp.GetTaskInfo(workers.QueueFor(workers.PriorityCrisis), person(3).Tries[0].MessageID); err != nil {
		t.Fatalf("person 3's send task: %v", err)
	}
	// A healthy roster: nothing to fix.
	if r, err = eng.Repair(ctx, cfg.ID); err != nil || r.Fixed() != 0 {
		t.Fatalf("third pass: %+v %v", r, err)
	}
}

// TestAMessageHandedOverBeforeItsPersonAnsweredStaysDue: a worker claimed
// a person's message and called the provider, then Redis went down before
// the roster heard; the person answered meanwhile. The message's send task
// runs again: it is still due, so the ledger's claim decides (it waits for
// the provider's report) instead of leaving the message "sending" for good.
func TestAMessageHandedOverBeforeItsPersonAnsweredStaysDue(t *testing.T) {
	ctx := context.Background()
	rg := newRig(t, "sms", "voice")
	cfg, err := rg.eng.Create(ctx, "clinic-a", &broadcasts.Request{Name: "Flood", Channels: []string{"sms", "voice"},
		Body: map[string]string{"en": "Flooding near the hospital."}, AckTimeout: "10m",
		Poll:     &broadcasts.Poll{Options: map[string]string{"1": "safe", "2": "need_help"}},
		Audience: []audiences.Recipient{{Phone: "+14155550101"}, {Phone: "+14155550102"}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := rg.eng.Fanout(ctx, workers.BroadcastPayload{Broadcast: cfg.ID, Chunk: 0}); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		p, _, err := rg.store.Person(ctx, cfg.ID, i)
		if err != nil {
			t.Fatal(err)
		}
		link, id := cfg.ID+":"+strconv.Itoa(i), p.Tries[0].MessageID
		if due, err := rg.eng.RecordMessage(ctx, link, id); err != nil || !due {
			t.Fatalf("person %d's first run: %v %v", i, due, err)
		}
		if i == 0 {
			// Person 0's message was claimed (the provider may have it).
			if _, err := rg.led.Claim(ctx, id, time.Minute); err != nil {
				t.Fatal(err)
			}
		}
		// Both answer by another way (a call, a WeChat message).
		if err := rg.eng.Answer(ctx, link, id, "voice", "safe", "", rg.clk.Now()); err != nil {
			t.Fatal(err)
		}
		due, err := rg.eng.RecordMessage(ctx, link, id)
		if err != nil {
			t.Fatal(err)
		}
		if want := i == 0; due != want {
			t.Errorf("person %d's message after the answer: due %v, want %v", i, due, want)
		}
	}
}

// TestFinishingAChunkLeasesTheNextAndCountsItOnce: a chunk's end gives
// the next chunk to the same run, counts the chunk done (once, however
// often it ends) and reads the broadcast's state, which is gone once the
// broadcast expired.
func TestFinishingAChunkLeasesTheNextAndCountsItOnce(t *testing.T) {
	ctx := context.Background()
	rg := newRig(t, "sms")
	people := make([]audiences.Recipient, 2*audiences.ChunkSize)
	for i := range people {
		people[i] = audiences.Recipient{Phone: fmt.Sprintf("+1415555%04d", i)}
	}
	cfg, err := rg.eng.Create(ctx, "clinic-a", &broadcasts.Request{Name: "Flood", Channels: []string{"sms"}, AckTimeout: "10m",
		Body: map[string]string{"en": "Flooding near the hospital."}, Audience: people})
	if err != nil {
		t.Fatal(err)
	}
	now := rg.clk.Now()
	for range 2 {
		if st, err := rg.store.FinishChunk(ctx, cfg.ID, 0, 1, "run-1", now.Add(broadcasts.FanoutLease)); err != nil || st != broadcasts.StateActive {
			t.Fatalf("finishing chunk 0: state %q, %v", st, err)
		}
	}
	if sum, err := rg.store.Get(ctx, "", cfg.ID); err != nil || sum.ChunksDone != 1 {
		t.Fatalf("chunks done %d after chunk 0 ended twice, %v; want 1", sum.ChunksDone, err)
	}
	if claim, err := rg.store.ClaimChunk(ctx, cfg.ID, 1, "run-2", now, now.Add(broadcasts.FanoutLease)); err != nil || claim != broadcasts.ChunkTaken {
		t.Fatalf("another run's claim of chunk 1: %v %v; want it taken by the run that ended chunk 0", claim, err)
	}
	if claim, err := rg.store.ClaimChunk(ctx, cfg.ID, 1, "run-1", now, now.Add(broadcasts.FanoutLease)); err != nil || claim != broadcasts.ChunkClaimed {
		t.Fatalf("the run's own claim of chunk 1: %v %v", claim, err)
	}
	if st, err := rg.store.FinishChunk(ctx, cfg.ID, 1, -1, "run-1", now.Add(broadcasts.FanoutLease)); err != nil || st != broadcasts.StateActive {
		t.Fatalf("finishing the last chunk: state %q, %v", st, err)
	}
	if sum, err := rg.store.Get(ctx, "", cfg.ID); err != nil || sum.ChunksDone != 2 {
		t.Fatalf("chunks done %d, %v; want 2", sum.ChunksDone, err)
	}
	// The broadcast expires (its record's TTL).
	if err := rg.rdb.Del(ctx, "gw:bc:{"+cfg.ID+"}").Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := rg.store.FinishChunk(ctx, cfg.ID, 1, -1, "run-1", now); !errors.Is(err, broadcasts.ErrNotFound) {
		t.Fatalf("finishing a chunk of an expired broadcast: %v; want ErrNotFound", err)
	}
}

// TestTheFanOutQueuesTheAudienceInItsOrder: one fan-out task makes the
// chunks one after the other, so every send of a chunk is queued before any
// of the next; a run that finds a chunk held by a live run leaves it, and
// the rest, to that run.
func TestTheFanOutQueuesTheAudienceInItsOrder(t *testing.T) {
	ctx := context.Background()
	rg := newRig(t, "sms")
	people := make([]audiences.Recipient, 2*audiences.ChunkSize+500)
	for i := range people {
		people[i] = audiences.Recipient{Phone: fmt.Sprintf("+1415555%04d", i)}
	}
	req := &broadcasts.Request{Name: "Flood", Channels: []string{"sms"}, AckTimeout: "10m",
		Body: map[string]string{"en": "Flooding near the hospital."}, Audience: people}
	cfg, err := rg.eng.Create(ctx, "clinic-a", req)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Chunks != 3 {
		t.Fatalf("%d chunks for %d people", cfg.Chunks, len(people))
	}
	// A second run, started while the first holds chunk 1, stops there.
	now := rg.clk.Now()
	if claim, err := rg.store.ClaimChunk(ctx, cfg.ID, 1, "another-run", now, now.Add(broadcasts.FanoutLease)); err != nil || claim != broadcasts.ChunkClaimed {
		t.Fatalf("claim of a chunk nobody holds: %v %v", claim, err)
	}
	if err := rg.eng.Fanout(ctx, workers.BroadcastPayload{Broadcast: cfg.ID, Chunk: 1}); err != nil {
		t.Fatal(err)
	}
	sends := func() []*asynq.TaskInfo {
		t.Helper()
		tasks, err := rg.insp.ListPendingTasks(workers.QueueFor(workers.PriorityCrisis), asynq.PageSize(10000))
		if errors.Is(err, asynq.ErrQueueNotFound) {
			return nil // nothing was ever queued there
		}
		if err != nil {
			t.Fatal(err)
		}
		return tasks
	}
	if n := len(sends()); n != 0 {
		t.Fatalf("a run made %d sends of a chunk another live run holds", n)
	}
	// Once that run is gone past its lease, the fan-out makes everyone,
	// chunk by chunk.
	rg.clk.Advance(broadcasts.FanoutLease + time.Second)
	if err := rg.eng.Fanout(ctx, workers.BroadcastPayload{Broadcast: cfg.ID, Chunk: 0}); err != nil {
		t.Fatal(err)
	}
	tasks := sends()
	if len(tasks) != len(people) {
		t.Fatalf("%d sends for %d people", len(tasks), len(people))
	}
	last := -1
	for n, task := range tasks {
		var p workers.SendPayload
		if err := json.Unmarshal(task.Payload, &p); err != nil {
			t.Fatal(err)
		}
		_, idx, _ := strings.Cut(p.Broadcast, ":")
		i, err := strconv.Atoi(idx)
		if err != nil {
			t.Fatalf("send %d is linked to %q", n, p.Broadcast)
		}
		chunk := i / audiences.ChunkSize
		if chunk < last {
			t.Fatalf("send %d in the queue is of chunk %d, after a send of chunk %d", n, chunk, last)
		}
		last = chunk
	}
	sum, err := rg.store.Get(ctx, "clinic-a", cfg.ID)
	if err != nil || sum.ChunksDone != 3 {
		t.Fatalf("chunks done: %+v %v", sum, err)
	}
}

// TestTheEngineRecordsWhenAPersonWasReachedAndAcknowledged: the
// after-action report's timeline is built from these times.
func TestTheEngineRecordsWhenAPersonWasReachedAndAcknowledged(t *testing.T) {
	ctx := context.Background()
	rg := newRig(t, "sms")
	cfg := rg.started(t, &broadcasts.Request{Name: "Flood", Channels: []string{"sms"},
		Body:       map[string]string{"en": "Reply 1 if you are safe, 2 if you need help."},
		Poll:       &broadcasts.Poll{Options: map[string]string{"1": "safe", "2": "need_help"}},
		AckTimeout: "10m", Audience: []audiences.Recipient{{Phone: "+14155550101"}}})
	link := cfg.ID + ":0"
	msg := rg.person(t, cfg.ID, 0).Tries[0].MessageID
	rg.clk.Advance(time.Minute)
	sentAt := rg.clk.Now()
	if err := rg.eng.Status(ctx, link, msg, ledger.StatusSent); err != nil {
		t.Fatal(err)
	}
	rg.clk.Advance(time.Minute)
	if err := rg.eng.Status(ctx, link, msg, ledger.StatusDelivered); err != nil {
		t.Fatal(err)
	}
	rg.clk.Advance(time.Minute)
	answeredAt := rg.clk.Now()
	if err := rg.eng.Answer(ctx, link, msg, "sms", "", "2", answeredAt); err != nil {
		t.Fatal(err)
	}
	p := rg.person(t, cfg.ID, 0)
	if tr := p.Tries[0]; tr.ReachedAt == nil || !tr.ReachedAt.Equal(sentAt) {
		t.Errorf("reached at %v, want %v (when the provider took it)", tr.ReachedAt, sentAt)
	}
	if p.AcknowledgedAt == nil || !p.AcknowledgedAt.Equal(answeredAt) || p.Answer != "need_help" {
		t.Errorf("acknowledged at %v with %q, want %v", p.AcknowledgedAt, p.Answer, answeredAt)
	}
}

// TestACanceledBroadcastLeavesThosePossiblyReachedToTheirMessage: a person
// whose message a worker is handing to the provider at the cancel, or the
// provider took before its report reached the roster, is not counted
// canceled (they may well get it): they follow their message's reports;
// the others are canceled, those without a ledger record yet too. An
// attempt the cancel could not stop that then fails tries nothing more.
func TestACanceledBroadcastLeavesThosePossiblyReachedToTheirMessage(t *testing.T) {
	ctx := context.Background()
	rg := newRig(t, "sms", "voice")
	cfg, msg, link := rg.closedToday(t, 4)
	// Persons 0 to 2 are due (their send tasks ran); person 3's has not.
	for i := range 3 {
		if due, err := rg.eng.RecordMessage(ctx, link(i), msg(i)); err != nil || !due {
			t.Fatalf("person %d: due %v %v", i, due, err)
		}
	}
	// Person 0's message is being handed over; person 1's provider took
	// it, and the roster is not told yet.
	for i := range 2 {
		if _, err := rg.led.Claim(ctx, msg(i), time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	if err := rg.led.RecordAccepted(ctx, msg(1), "sms", "SM00000000000000000000000000000001"); err != nil {
		t.Fatal(err)
	}

	if err := rg.eng.Cancel(ctx, cfg.ID); err != nil {
		t.Fatal(err)
	}
	if err := rg.eng.CancelPeople(ctx, cfg.ID); err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{broadcasts.PersonQueued, broadcasts.PersonQueued, broadcasts.PersonCanceled, broadcasts.PersonCanceled} {
		if p := rg.person(t, cfg.ID, i); p.State != want {
			t.Errorf("person %d after the cancel: %s, want %s", i, p.State, want)
		}
	}
	for i := 2; i < 4; i++ {
		if m, err := rg.led.Get(ctx, "clinic-a", msg(i)); err != nil || m.Status != ledger.StatusCanceled {
			t.Errorf("person %d's message: %v %v, want canceled", i, m, err)
		}
	}
	// The reports come in: person 1 was reached; person 0's attempt failed.
	if err := rg.eng.Status(ctx, link(1), msg(1), ledger.StatusSent); err != nil {
		t.Fatal(err)
	}
	if err := rg.led.RecordFailure(ctx, msg(0), ledger.Failure{Code: "21610", Message: "unsubscribed", Final: true, Attempt: 1}); err != nil {
		t.Fatal(err)
	}
	if err := rg.eng.Status(ctx, link(0), msg(0), ledger.StatusFailed); err != nil {
		t.Fatal(err)
	}
	if p := rg.person(t, cfg.ID, 1); p.State != broadcasts.PersonSent {
		t.Errorf("person 1 after the provider's report: %s, want sent", p.State)
	}
	p := rg.person(t, cfg.ID, 0)
	if p.State != broadcasts.PersonCanceled || len(p.Tries) != 1 {
		t.Errorf("person 0 after their attempt failed: %s with %d tries, want canceled with no call", p.State, len(p.Tries))
	}
	sum, err := rg.store.Get(ctx, "clinic-a", cfg.ID)
	if err != nil {
		t.Fatal(err)
	}
	if roster := sum.Roster(); roster.People[broadcasts.PersonCanceled] != 3 || roster.People[broadcasts.PersonSent] != 1 {
		t.Errorf("roster: %v, want 3 canceled and 1 sent", roster.People)
	}
}

// A person left to their message by a cancel (a worker was handing it
// over) is canceled when that attempt fails and its task runs again: the
// retry sends nothing. One whose attempt's answer was lost (the provider
// may have it) stays left to the ledger's claim.
func TestARetryAfterTheBroadcastWasCanceledSendsNothing(t *testing.T) {
	ctx := context.Background()
	rg := newRig(t, "sms", "voice")
	cfg, msg, link := rg.closedToday(t, 2)
	for i := range 2 {
		if due, err := rg.eng.RecordMessage(ctx, link(i), msg(i)); err != nil || !due {
			t.Fatalf("person %d: due %v %v", i, due, err)
		}
		if _, err := rg.led.Claim(ctx, msg(i), time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	if err := rg.eng.Cancel(ctx, cfg.ID); err != nil {
		t.Fatal(err)
	}
	if err := rg.eng.CancelPeople(ctx, cfg.ID); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if p := rg.person(t, cfg.ID, i); p.State != broadcasts.PersonQueued {
			t.Fatalf("person %d after the cancel: %s, want queued (left to the message being handed over)", i, p.State)
		}
	}
	// Person 0's attempt fails (Twilio answered 500); person 1's timed out
	// after the request was written.
	if err := rg.led.RecordFailure(ctx, msg(0), ledger.Failure{Code: "20500", Message: "internal error", Attempt: 1,
		RetryAt: time.Now().Add(10 * time.Second)}); err != nil {
		t.Fatal(err)
	}
	if err := rg.led.RecordFailure(ctx, msg(1), ledger.Failure{Code: "timeout", Message: "no answer", Attempt: 1,
		Unconfirmed: true, RetryAt: time.Now().Add(10 * time.Second)}); err != nil {
		t.Fatal(err)
	}
	// Their tasks run again.
	if due, err := rg.eng.RecordMessage(ctx, link(0), msg(0)); err != nil || due {
		t.Fatalf("person 0's retry: due %v %v, want not due", due, err)
	}
	if p := rg.person(t, cfg.ID, 0); p.State != broadcasts.PersonCanceled || len(p.Tries) != 1 {
		t.Errorf("person 0 after the retry: %s with %d tries, want canceled with no call", p.State, len(p.Tries))
	}
	if m, err := rg.led.Get(ctx, "clinic-a", msg(0)); err != nil || m.Status != ledger.StatusCanceled {
		t.Errorf("person 0's message: %v %v, want canceled", m, err)
	}
	if due, err := rg.eng.RecordMessage(ctx, link(1), msg(1)); err != nil || !due {
		t.Fatalf("person 1's retry: due %v %v, want due (the provider may have it: the ledger's claim decides)", due, err)
	}
	if p := rg.person(t, cfg.ID, 1); p.State != broadcasts.PersonQueued {
		t.Errorf("person 1 after the retry: %s, want queued", p.State)
	}
}

// beforeChunkRead runs once, before the pipeline that reads chunk 1 of
// an audience.
type beforeChunkRead struct {
	once sync.Once
	run  func()
}

func (h *beforeChunkRead) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h *beforeChunkRead) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h *beforeChunkRead) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, c := range cmds {
			if a := c.Args(); c.Name() == "lindex" && len(a) == 3 && fmt.Sprint(a[2]) == "1" {
				h.once.Do(h.run)
			}
		}
		return next(ctx, cmds)
	}
}

// The fan-out makes a chunk's people while the chunk before is queued: a
// cancel whose pass went by before they were made leaves none of them
// waiting (the fan-out cancels them as it stops).
func TestACancelBeforeTheNextChunksPeopleWereMadeLeavesNoneWaiting(t *testing.T) {
	ctx := context.Background()
	rdb := redistest.Start(t).Client()
	clk := &clock{now: time.Now().UTC().Truncate(time.Second)}
	reg := channels.NewRegistry(named("sms"))
	engine := func(rdb *redis.Client) *broadcasts.Engine {
		q := asynq.NewClientFromRedisClient(rdb)
		return (&broadcasts.Engine{Messages: &messaging.Service{Ledger: ledger.New(rdb, 24*time.Hour), Queue: q, Channels: reg, Now: clk.Now},
			Store: broadcasts.NewStore(rdb, 24*time.Hour), Audiences: audiences.NewStore(rdb, audiences.DefaultTTL), Queue: q,
			Channels: reg, Now: clk.Now}).Init()
	}
	lead := engine(rdb)
	const n = audiences.ChunkSize + 200
	people := make([]audiences.Recipient, n)
	for i := range people {
		people[i] = audiences.Recipient{Phone: fmt.Sprintf("+1415556%04d", i)}
	}
	cfg, err := lead.Create(ctx, "clinic-a", &broadcasts.Request{Name: "Flood", Channels: []string{"sms"},
		Body: map[string]string{"en": "Flooding near the hospital."}, AckTimeout: "10m", Audience: people})
	if err != nil {
		t.Fatal(err)
	}
	// The crisis lead cancels, and the cancel's pass runs, just before the
	// worker reads the second chunk of the audience to make its people.
	worker := redis.NewClient(rdb.Options())
	t.Cleanup(func() { worker.Close() })
	worker.AddHook(&beforeChunkRead{run: func() {
		if err := lead.Cancel(ctx, cfg.ID); err != nil {
			t.Error(err)
		}
		if err := lead.CancelPeople(ctx, cfg.ID); err != nil {
			t.Error(err)
		}
	}})
	if err := engine(worker).Fanout(ctx, workers.BroadcastPayload{Broadcast: cfg.ID, Chunk: 0}); err != nil {
		t.Fatal(err)
	}
	store := broadcasts.NewStore(rdb, 24*time.Hour)
	made, waiting := 0, 0
	for i := range n {
		p, _, err := store.Person(ctx, cfg.ID, i)
		if errors.Is(err, broadcasts.ErrNotFound) {
			continue
		} else if err != nil {
			t.Fatal(err)
		}
		made++
		if !p.Done() {
			waiting++
		}
	}
	if made <= audiences.ChunkSize {
		t.Fatalf("%d people made: the second chunk's were not (the test needs them made after the cancel's pass)", made)
	}
	if waiting > 0 {
		t.Fatalf("%d of the %d people made still wait after the cancel", waiting, made)
	}
}

// failDue fails the pipeline that reads a broadcast's due people, as a
// worker dying mid-sweep would leave it.
type failDue struct{}

func (failDue) DialHook(next redis.DialHook) redis.DialHook { return next }
func (failDue) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return next
}
func (failDue) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, c := range cmds {
			if c.Name() == "zcard" {
				return errors.New("the worker died here")
			}
		}
		return next(ctx, cmds)
	}
}

// TestASweepThatDiesWhileTheFanOutRunsHasItsSuccessorQueued: while the
// audience is being made, a sweep queues the next one before its own work,
// so a worker dying mid-sweep does not break the chain that takes over a
// fan-out whose worker died (until Asynq gave the sweep back, a minute or
// two later).
func TestASweepThatDiesWhileTheFanOutRunsHasItsSuccessorQueued(t *testing.T) {
	ctx := context.Background()
	rdb := redistest.Start(t).Client()
	clk := &clock{now: time.Now().UTC().Truncate(time.Second)}
	q := asynq.NewClientFromRedisClient(rdb)
	reg := channels.NewRegistry(named("sms"))
	engine := func(store *broadcasts.Store) *broadcasts.Engine {
		return (&broadcasts.Engine{Messages: &messaging.Service{Ledger: ledger.New(rdb, 24*time.Hour), Queue: q, Channels: reg, Now: clk.Now},
			Store: store, Audiences: audiences.NewStore(rdb, audiences.DefaultTTL), Queue: q, Channels: reg, Now: clk.Now}).Init()
	}
	cfg, err := engine(broadcasts.NewStore(rdb, 24*time.Hour)).Create(ctx, "clinic-a", &broadcasts.Request{Name: "Flood",
		Channels: []string{"sms"}, Body: map[string]string{"en": "Flooding near the hospital."}, AckTimeout: "10m",
		Audience: []audiences.Recipient{{Phone: "+14155550101"}}})
	if err != nil {
		t.Fatal(err)
	}
	// Its fan-out has not run; a sweep ten seconds later dies half-way.
	clk.Advance(10 * time.Second)
	dying := redis.NewClient(rdb.Options())
	t.Cleanup(func() { dying.Close() })
	dying.AddHook(failDue{})
	if err := engine(broadcasts.NewStore(dying, 24*time.Hour)).Sweep(ctx, cfg.ID); err == nil {
		t.Fatal("the sweep did not die")
	}
	next := fmt.Sprintf("%s:sweep:%d", cfg.ID, clk.Now().Add(time.Second).Unix())
	if _, err := asynq.NewInspectorFromRedisClient(rdb).GetTaskInfo(workers.QueueFor(workers.PriorityHigh), next); err != nil {
		t.Fatalf("the next sweep is not queued: %v", err)
	}
}
