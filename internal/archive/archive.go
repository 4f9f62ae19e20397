// Package archive moves messages out of Redis into the blob store once
// they are final and older than the hot window, and finds them there.
//
// Redis holds the hot state; the blob store holds the history. A message
// that reached a final status (delivered, undelivered, failed, canceled,
// suppressed) and was made more than Hot ago is written, with its
// history, to a compressed JSON-lines object of its tenant and day, and
// then removed from Redis. The ledger's Get falls back to Find, so
// GET /v1/messages/{id} answers for an archived message as before.
//
// Layout in the blob store (encrypted with RECORDING_KEYS when set):
//
//	archive/messages/<tenant>/<yyyy-mm-dd>/<first id>-<last id>.jsonl.gz
//
// and in Redis, per tenant:
//
//	gw:archive:{<tenant>}:lease  string  the pass in progress (SET NX PX): one archiver per tenant
//	gw:archive:{<tenant>}:batch  hash    obj, ids: the batch being moved (the journal)
//
// A batch is journaled before its object is written and cleared once its
// messages are gone from Redis, so a pass that dies anywhere in between is
// finished by the next one (on any worker) with the same object: every
// message ends in exactly one object, and nothing accepted is lost. An
// object is written once; only an erasure rewrites it (scrubbed), and
// retention deletes whole days.
package archive

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/redis/go-redis/v9"
	"gocloud.dev/blob"
	"gocloud.dev/gcerrors"

	"github.com/patientmsg/gateway/internal/ledger"
	"github.com/patientmsg/gateway/internal/recordings"
)

// Defaults of an Archive.
const (
	DefaultBatch = 500
	// maxObjectBytes bounds what Find and Erase read of one object.
	maxObjectBytes = 256 << 20
	leaseTTL       = 5 * time.Minute
	// SentSettled is how long after it was made a message left at `sent`
	// counts as settled: past the lost-callback reconciler's three days,
	// and beyond any delivery report that is still to come.
	SentSettled = 96 * time.Hour
	// maxBatches bounds a tenant's pass well within its lease (500
	// messages a batch take well under a second to move); the next pass
	// goes on.
	maxBatches = 100
	dayLayout  = "2006-01-02"
)

// Archive moves a gateway's final messages to the blob store.
type Archive struct {
	Redis  redis.UniversalClient
	Ledger *ledger.Ledger
	Bucket *blob.Bucket
	// Keys seal the objects (RECORDING_KEYS); nil stores them in clear.
	Keys *recordings.Keyring
	// Hot is how long a message stays in Redis (GATEWAY_HOT_RETENTION).
	Hot time.Duration
	// RetentionOf is a tenant's retention: archived days older than it
	// are deleted.
	RetentionOf func(ctx context.Context, tenant string) time.Duration
	// Tenants lists the tenants to archive.
	Tenants func() []string
	// Batch is the most messages an object holds (DefaultBatch when 0).
	Batch  int
	Now    func() time.Time
	Logger *slog.Logger

	// afterWrite, for tests, runs between writing a batch's object and
	// removing its messages from Redis; an error stops the pass there.
	afterWrite func() error
}

func (a *Archive) now() time.Time {
	if a.Now == nil {
		return time.Now()
	}
	return a.Now()
}

func (a *Archive) batch() int {
	if a.Batch <= 0 {
		return DefaultBatch
	}
	return a.Batch
}

func leaseKey(tenant string) string   { return "gw:archive:{" + tenant + "}:lease" }
func journalKey(tenant string) string { return "gw:archive:{" + tenant + "}:batch" }

// prefix is where a tenant's archive lives.
func prefix(tenant string) string { return "archive/messages/" + url.PathEscape(tenant) + "/" }

// objectKey is a batch's object: its tenant, the day its messages were
// made (UTC) and its first and last ids.
func objectKey(tenant string, day time.Time, first, last string) string {
	return prefix(tenant) + day.UTC().Format(dayLayout) + "/" + first + "-" + last + ".jsonl.gz"
}

// dayOf is the UTC day a message id was made.
func dayOf(id string) (time.Time, bool) {
	u, err := ulid.ParseStrict(id)
	if err != nil {
		return time.Time{}, false
	}
	t := ulid.Time(u.Time()).UTC()
	return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC), true
}

// Result counts what a pass did.
type Result struct {
	Archived, Objects, DaysDeleted int
}

// Pass archives, for every tenant whose lease it gets, the batches due,
// and deletes archived days past the tenant's retention.
func (a *Archive) Pass(ctx context.Context) (Result, error) {
	var res Result
	for _, tenant := range a.Tenants() {
		if err := a.tenant(ctx, tenant, &res); err != nil {
			return res, fmt.Errorf("archive of tenant %s: %w", tenant, err)
		}
	}
	if res.Archived > 0 || res.DaysDeleted > 0 {
		a.Logger.Info("messages archived", "messages", res.Archived, "objects", res.Objects, "days_deleted", res.DaysDeleted)
	}
	return res, nil
}

func (a *Archive) tenant(ctx context.Context, tenant string, res *Result) error {
	token := strconv.FormatInt(time.Now().UnixNano(), 36)
	ok, err := a.Redis.SetNX(ctx, leaseKey(tenant), token, leaseTTL).Result()
	if err != nil || !ok {
		return err
	}
	defer func() {
		ctx := context.WithoutCancel(ctx)
		if v, _ := a.Redis.Get(ctx, leaseKey(tenant)).Result(); v == token {
			a.Redis.Del(ctx, leaseKey(tenant))
		}
	}()
	// A batch a pass left half-way is finished first, as it was.
	if obj, ids, err := a.journal(ctx, tenant); err != nil {
		return err
	} else if obj != "" {
		n, err := a.move(ctx, tenant, obj, ids)
		if err != nil {
			return err
		}
		res.Archived += n
		res.Objects++
	}
	cursor := ""
	for range maxBatches {
		now := a.now()
		due, last, err := a.Ledger.ArchiveCandidates(ctx, tenant, cursor, now.Add(-a.Hot), now.Add(-max(a.Hot, SentSettled)),
			4*a.batch(), a.batch())
		if err != nil {
			return err
		}
		ids := sameDay(due)
		if len(ids) == 0 {
			if last == "" {
				break // nothing more is settled
			}
			cursor = last // only unsettled messages here: step over them
			continue
		}
		day, _ := dayOf(ids[0])
		obj := objectKey(tenant, day, ids[0], ids[len(ids)-1])
		if err := a.Redis.HSet(ctx, journalKey(tenant), "obj", obj, "ids", strings.Join(ids, ",")).Err(); err != nil {
			return err
		}
		n, err := a.move(ctx, tenant, obj, ids)
		if err != nil {
			return err
		}
		res.Archived += n
		res.Objects++
		if n == 0 {
			break
		}
	}
	n, err := a.expire(ctx, tenant)
	res.DaysDeleted += n
	return err
}

// sameDay keeps the leading ids made on the first one's day.
func sameDay(ids []string) []string {
	if len(ids) == 0 {
		return nil
	}
	first, ok := dayOf(ids[0])
	if !ok {
		return nil
	}
	for i, id := range ids {
		if d, ok := dayOf(id); !ok || !d.Equal(first) {
			return ids[:i]
		}
	}
	return ids
}

// journal reads the batch a pass left half-way ("" when none).
func (a *Archive) journal(ctx context.Context, tenant string) (string, []string, error) {
	h, err := a.Redis.HGetAll(ctx, journalKey(tenant)).Result()
	if err != nil || h["obj"] == "" {
		return "", nil, err
	}
	return h["obj"], strings.Split(h["ids"], ","), nil
}

// move writes a journaled batch's object, unless it is there already,
// then removes its messages from Redis and clears the journal.
func (a *Archive) move(ctx context.Context, tenant, obj string, ids []string) (int, error) {
	exists, err := a.Bucket.Exists(ctx, obj)
	if err != nil {
		return 0, err
	}
	msgs, err := a.Ledger.GetMany(ctx, tenant, ids)
	if err != nil {
		return 0, err
	}
	if !exists {
		if len(msgs) < len(ids) {
			// Gone from Redis without an object: erased by retention or
			// removed meanwhile; what is left is archived.
			a.Logger.Info("archive batch smaller than journaled (messages expired meanwhile)", "want", len(ids), "have", len(msgs))
		}
		if err := a.write(ctx, obj, msgs); err != nil {
			return 0, err
		}
	}
	if a.afterWrite != nil {
		if err := a.afterWrite(); err != nil {
			return 0, err
		}
	}
	if err := a.Ledger.Forget(ctx, tenant, msgs); err != nil {
		return 0, err
	}
	if err := a.Redis.Del(ctx, journalKey(tenant)).Err(); err != nil {
		return 0, err
	}
	return len(msgs), nil
}

// write stores messages as one gzipped JSON-lines object, sealed with the
// keys when there are any.
func (a *Archive) write(ctx context.Context, obj string, msgs []*ledger.Message) error {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	enc := json.NewEncoder(zw)
	for _, m := range msgs {
		if err := enc.Encode(m); err != nil {
			return err
		}
	}
	if err := zw.Close(); err != nil {
		return err
	}
	body := buf.Bytes()
	if a.Keys != nil {
		body = a.Keys.Seal(obj, body)
	}
	return a.Bucket.WriteAll(ctx, obj, body, &blob.WriterOptions{ContentType: "application/octet-stream"})
}

// read returns an object's messages.
func (a *Archive) read(ctx context.Context, obj string) ([]*ledger.Message, error) {
	r, err := a.Bucket.NewReader(ctx, obj, nil)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	raw, err := io.ReadAll(io.LimitReader(r, maxObjectBytes))
	if err != nil {
		return nil, err
	}
	if raw, err = a.Keys.Open(obj, raw); err != nil {
		return nil, err
	}
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("archive object %s: %w", obj, err)
	}
	dec := json.NewDecoder(zr)
	var out []*ledger.Message
	for {
		var m ledger.Message
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			return out, nil
		} else if err != nil {
			return nil, fmt.Errorf("archive object %s: %w", obj, err)
		}
		out = append(out, &m)
	}
}

// objects lists the objects of a tenant's day.
func (a *Archive) objects(ctx context.Context, tenant string, day time.Time) ([]string, error) {
	var out []string
	it := a.Bucket.List(&blob.ListOptions{Prefix: prefix(tenant) + day.Format(dayLayout) + "/"})
	for {
		o, err := it.Next(ctx)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		out = append(out, o.Key)
	}
}

// covers says whether an object's id range holds id.
func covers(obj, id string) bool {
	name := obj[strings.LastIndexByte(obj, '/')+1:]
	first, last, ok := strings.Cut(strings.TrimSuffix(name, ".jsonl.gz"), "-")
	return ok && first <= id && id <= last
}

// Find returns the tenant's archived message (ledger.Cold), any tenant's
// for "": it lists the objects of the day the id was made and reads the
// one whose id range holds it.
func (a *Archive) Find(ctx context.Context, tenant, id string) (*ledger.Message, error) {
	day, ok := dayOf(id)
	if u, err := ulid.ParseStrict(id); !ok || err != nil || ulid.Time(u.Time()).After(a.now().Add(-a.Hot)) {
		return nil, ledger.ErrNotFound // never moved: too young
	}
	if tenant == "" {
		// A late reply, complaint or unsubscription names only the
		// message: every tenant's archive of that day is looked at.
		for _, t := range a.Tenants() {
			m, err := a.Find(ctx, t, id)
			if !errors.Is(err, ledger.ErrNotFound) {
				return m, err
			}
		}
		return nil, ledger.ErrNotFound
	}
	objs, err := a.objects(ctx, tenant, day)
	if err != nil {
		return nil, err
	}
	for _, obj := range objs {
		if !covers(obj, id) {
			continue
		}
		msgs, err := a.read(ctx, obj)
		if err != nil {
			return nil, err
		}
		for _, m := range msgs {
			if m.ID == id && m.Tenant == tenant {
				return m, nil
			}
		}
	}
	return nil, ledger.ErrNotFound
}

// Boundary is the newest id an archived message can have: messages made
// since the hot window began are in Redis only (ledger.ColdLister).
func (a *Archive) Boundary() string {
	var u ulid.ULID
	_ = u.SetTime(ulid.Timestamp(a.now().Add(-a.Hot)))
	_ = u.SetEntropy(bytes.Repeat([]byte{0xff}, 10))
	return u.String()
}

// Older returns up to n of the tenant's archived messages older than the
// id before ("" for the newest), newest first, without their histories
// (ledger.ColdLister: the message log goes on into the archive). It reads
// whole days, newest first, until it has n.
func (a *Archive) Older(ctx context.Context, tenant, before string, n int) ([]*ledger.Message, error) {
	days, err := a.days(ctx, tenant)
	if err != nil {
		return nil, err
	}
	beforeDay := ""
	if d, ok := dayOf(before); ok {
		beforeDay = d.Format(dayLayout)
	}
	var out []*ledger.Message
	for i := len(days) - 1; i >= 0 && len(out) < n; i-- {
		if beforeDay != "" && days[i] > beforeDay {
			continue
		}
		objs, err := a.objects(ctx, tenant, mustDay(days[i]))
		if err != nil {
			return nil, err
		}
		var got []*ledger.Message
		for _, obj := range objs {
			if before != "" && !startsBefore(obj, before) {
				continue
			}
			msgs, err := a.read(ctx, obj)
			if err != nil {
				return nil, err
			}
			for _, m := range msgs {
				if (before == "" || m.ID < before) && m.Tenant == tenant {
					m.Events = nil
					got = append(got, m)
				}
			}
		}
		slices.SortFunc(got, func(x, y *ledger.Message) int { return strings.Compare(y.ID, x.ID) })
		out = append(out, got...)
	}
	return out[:min(n, len(out))], nil
}

// days lists the days of a tenant's archive, oldest first.
func (a *Archive) days(ctx context.Context, tenant string) ([]string, error) {
	var out []string
	it := a.Bucket.List(&blob.ListOptions{Prefix: prefix(tenant), Delimiter: "/"})
	for {
		o, err := it.Next(ctx)
		if errors.Is(err, io.EOF) {
			slices.Sort(out)
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if o.IsDir {
			out = append(out, strings.TrimSuffix(strings.TrimPrefix(o.Key, prefix(tenant)), "/"))
		}
	}
}

func mustDay(s string) time.Time {
	t, _ := time.Parse(dayLayout, s)
	return t
}

// startsBefore says whether an object's id range begins before id.
func startsBefore(obj, id string) bool {
	name := obj[strings.LastIndexByte(obj, '/')+1:]
	first, _, _ := strings.Cut(name, "-")
	return first < id
}

// expire deletes the tenant's archived days past its retention.
func (a *Archive) expire(ctx context.Context, tenant string) (int, error) {
	if a.RetentionOf == nil {
		return 0, nil
	}
	keep := a.RetentionOf(ctx, tenant)
	if keep <= 0 {
		return 0, nil
	}
	cutoff := a.now().Add(-keep).UTC().Format(dayLayout)
	days, err := a.days(ctx, tenant)
	if err != nil {
		return 0, err
	}
	deleted := 0
	// A day is deleted once all of it is past the retention.
	for _, day := range days {
		if day >= cutoff {
			break
		}
		objs, err := a.objects(ctx, tenant, mustDay(day))
		if err != nil {
			return deleted, err
		}
		for _, obj := range objs {
			if err := a.Bucket.Delete(ctx, obj); err != nil && gcerrors.Code(err) != gcerrors.NotFound {
				return deleted, err
			}
		}
		deleted++
	}
	return deleted, nil
}

// Erase scrubs the tenant's archived messages that match (a patient's):
// each object holding one is written again with those messages scrubbed
// as the ledger scrubs a record (ledger.ScrubMessage). before runs for
// each such message first (its recording is deleted); when it fails, the
// object is left as it was, so a retry finds the message again. It
// returns how many messages it scrubbed.
func (a *Archive) Erase(ctx context.Context, tenant string, match func(*ledger.Message) bool, before func(*ledger.Message) error) (int, error) {
	n := 0
	it := a.Bucket.List(&blob.ListOptions{Prefix: prefix(tenant)})
	for {
		o, err := it.Next(ctx)
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		msgs, err := a.read(ctx, o.Key)
		if err != nil {
			return n, err
		}
		hit := 0
		for _, m := range msgs {
			if m.ErasedAt != nil || !match(m) {
				continue
			}
			if before != nil {
				if err := before(m); err != nil {
					return n, err
				}
			}
			ledger.ScrubMessage(m, a.now())
			hit++
		}
		if hit == 0 {
			continue
		}
		if err := a.write(ctx, o.Key, msgs); err != nil {
			return n, err
		}
		n += hit
	}
}
