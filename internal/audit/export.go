package audit

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
	"gocloud.dev/blob"
	"gocloud.dev/gcerrors"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// Objects of the blob store, per tenant, named by zero-padded numbers so
// they list in order:
//
//	audit/<tenant>/records/<first index>.jsonl   records, one per line
//	audit/<tenant>/hashes/<first index>.bin      their stored tree hashes
//	audit/<tenant>/checkpoints/<tree size>       a signed checkpoint
const prefix = "audit/"

func recordsObject(tenant string, from int64) string {
	return fmt.Sprintf("%s%s/records/%020d.jsonl", prefix, tenant, from)
}
func hashesObject(tenant string, from int64) string {
	return fmt.Sprintf("%s%s/hashes/%020d.bin", prefix, tenant, from)
}
func checkpointObject(tenant string, size int64) string {
	return fmt.Sprintf("%s%s/checkpoints/%020d", prefix, tenant, size)
}

// Exporter copies the tenants' logs to the blob store in batches, each
// written once (IfNotExist) and followed by a signed checkpoint of the
// tree up to it. Any number of workers may export at once: a lease in
// Redis keeps them from doing the same work, and without it they would
// still agree — a batch starts where the last one exported ended, and a
// batch already written (by a worker that crashed before it moved the
// mark on) is checked against the log and taken as it is.
type Exporter struct {
	Log    *Log
	Bucket *blob.Bucket
	Signer note.Signer
	// Batch is the most records per object (0: 1000).
	Batch int
	// Retention is how long an exported event stays in Redis (0: for
	// ever); Find reads older ones from the export.
	Retention time.Duration
	// Now is the clock Retention is counted on (nil: time.Now).
	Now    func() time.Time
	Logger *slog.Logger
}

// setExportedScript moves the export mark forward, never back.
var setExportedScript = newScript(`
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > cur then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
`)

// unlockScript releases the lease it holds.
var unlockScript = newScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

// Run exports every tenant's new events every interval until ctx ends.
func (x *Exporter) Run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if err := x.ExportAll(ctx); err != nil && ctx.Err() == nil {
			x.logger().Error("audit export failed; it resumes at the next run", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (x *Exporter) logger() *slog.Logger {
	if x.Logger == nil {
		return slog.Default()
	}
	return x.Logger
}

// ExportAll exports the new events of every tenant.
func (x *Exporter) ExportAll(ctx context.Context) error {
	tenants, err := x.Log.Tenants(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, t := range tenants {
		if _, err := x.Export(ctx, t); err != nil {
			errs = append(errs, fmt.Errorf("tenant %s: %w", t, err))
		}
	}
	return errors.Join(errs...)
}

// Export exports a tenant's events not exported yet, and returns up to
// where its log is exported now. It does nothing while another worker
// holds the tenant's lease.
func (x *Exporter) Export(ctx context.Context, tenant string) (int64, error) {
	rdb := x.Log.rdb
	token := make([]byte, 16)
	_, _ = rand.Read(token)
	tok := hex.EncodeToString(token)
	ok, err := rdb.SetNX(ctx, exportLockKey(tenant), tok, 2*time.Minute).Result()
	if err != nil || !ok {
		return 0, err
	}
	defer unlockScript.Run(context.WithoutCancel(ctx), rdb, []string{exportLockKey(tenant)}, tok)
	batch := int64(x.Batch)
	if batch <= 0 {
		batch = 1000
	}
	if err := x.Log.upgrade(ctx, tenant); err != nil {
		return 0, err
	}
	for {
		from, err := rdb.Get(ctx, exportedKey(tenant)).Int64()
		if err != nil && !isNil(err) {
			return 0, err
		}
		size, err := x.Log.Size(ctx, tenant)
		if err != nil {
			return from, err
		}
		if from >= size {
			return from, errors.Join(x.trimHashes(ctx, tenant, from), x.trim(ctx, tenant, from))
		}
		to, err := x.exportRecords(ctx, tenant, from, min(size, from+batch), size)
		if err != nil {
			return from, err
		}
		if err := x.exportHashes(ctx, tenant, from, to); err != nil {
			return from, err
		}
		if err := x.Log.packFull(ctx, tenant, from, to); err != nil {
			return from, err
		}
		th, err := tlog.TreeHash(to, x.Log.HashReader(ctx, tenant))
		if err != nil {
			return from, err
		}
		signed, err := Checkpoint{Tenant: tenant, Tree: tlog.Tree{N: to, Hash: th}}.Sign(x.Signer)
		if err != nil {
			return from, err
		}
		if _, err := writeOnce(ctx, x.Bucket, checkpointObject(tenant, to), signed); err != nil {
			return from, err
		}
		if err := setExportedScript.Run(ctx, rdb, []string{exportedKey(tenant)}, to).Err(); err != nil {
			return from, err
		}
		x.logger().Debug("audit events exported", "tenant", tenant, "from", from, "to", to)
	}
}

// hashTrimStep bounds the records whose tree hashes one transaction
// removes (about twice as many hashes).
const hashTrimStep = 20000

// trimHashes removes from Redis the tree hashes of exported records that
// no later append or tree hash reads: the blob store holds them all (a
// proof is made from there, by Verify). A log of size n ≥ exported only
// ever reads, of the hashes below the export mark, the roots of the
// complete subtrees exported splits into (its "frontier", one per bit of
// exported): those stay, and leave in turn once a larger subtree covers
// them. Without this, every event left about 200 bytes of hashes in
// Redis for ever.
func (x *Exporter) trimHashes(ctx context.Context, tenant string, exported int64) error {
	rdb := x.Log.rdb
	done, err := rdb.Get(ctx, hashesTrimmedKey(tenant)).Int64()
	if err != nil && !isNil(err) {
		return err
	}
	for done < exported {
		to := min(exported, done+hashTrimStep)
		keep := map[int64]bool{}
		for _, i := range frontier(to) {
			keep[i] = true
		}
		var gone []int64
		for _, i := range frontier(done) { // kept by the last pass
			if !keep[i] {
				gone = append(gone, i)
			}
		}
		for i := tlog.StoredHashCount(done); i < tlog.StoredHashCount(to); i++ {
			if !keep[i] {
				gone = append(gone, i)
			}
		}
		if _, err := rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
			hashStore.deleteFields(ctx, p, tenant, gone)
			p.Set(ctx, hashesTrimmedKey(tenant), to, 0)
			return nil
		}); err != nil {
			return err
		}
		done = to
	}
	return nil
}

// frontier is the stored indexes of the roots of the complete subtrees a
// tree of n records splits into, largest first.
func frontier(n int64) []int64 {
	var out []int64
	start := int64(0)
	for level := 62; level >= 0; level-- {
		if n&(1<<level) == 0 {
			continue
		}
		out = append(out, tlog.StoredHashIndex(level, start>>level))
		start += 1 << level
	}
	return out
}

// trimStep bounds the events one trim transaction removes.
const trimStep = 10000

// trim removes from Redis the exported events older than Retention, from
// the start of the log on: events [0, mark) are then read from the export
// (Find) and the mark only moves forward. It stops at the first event not
// old enough, so an event is never out of Redis before an older one. A
// missing event (removed by an earlier trim that went by time alone)
// counts as removed.
func (x *Exporter) trim(ctx context.Context, tenant string, exported int64) error {
	if x.Retention <= 0 {
		return nil
	}
	rdb := x.Log.rdb
	cutoff := x.now().Add(-x.Retention)
	mark, err := x.Log.trimmed(ctx, tenant)
	if err != nil {
		return err
	}
	// Mostly the oldest event still in Redis is not old enough yet: read
	// it alone before a whole step.
	step := int64(1)
	for mark < exported {
		to := min(exported, mark+step)
		step = trimStep
		idx := make([]int64, 0, to-mark)
		for i := mark; i < to; i++ {
			idx = append(idx, i)
		}
		recs, err := recordStore.read(ctx, rdb, tenant, idx)
		if err != nil {
			return err
		}
		n := 0
		for ; n < len(recs); n++ {
			if recs[n] == nil {
				continue // gone already
			}
			e, err := Decode([]byte(*recs[n]))
			if err != nil {
				return fmt.Errorf("record %d of tenant %s is unreadable: %w", idx[n], tenant, err)
			}
			if !e.Time.Before(cutoff) {
				break
			}
		}
		if n == 0 {
			return nil
		}
		end := mark + int64(n)
		if _, err := rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
			recordStore.deleteFields(ctx, p, tenant, idx[:n])
			for b := bucketOf(mark); (b+1)*bucketSize <= end; b++ {
				p.ZRem(ctx, startsKey(tenant), b) // the bucket is empty now
				p.Del(ctx, packedBucketKey(tenant, b))
			}
			p.Set(ctx, trimmedKey(tenant), end, 0)
			return nil
		}); err != nil {
			return err
		}
		mark = end
		if n < len(recs) {
			return nil
		}
	}
	return nil
}

func (x *Exporter) now() time.Time {
	if x.Now != nil {
		return x.Now()
	}
	return time.Now()
}

// exportRecords writes records [from, to) as one object, or finds the
// object a crashed export wrote from the same index and checks it
// against the log; it returns the end of the records the object holds.
func (x *Exporter) exportRecords(ctx context.Context, tenant string, from, to, size int64) (int64, error) {
	recs, err := x.Log.Records(ctx, tenant, from, to)
	if err != nil {
		return 0, err
	}
	existing, err := writeOnce(ctx, x.Bucket, recordsObject(tenant, from), joinLines(recs))
	if err != nil || existing == nil {
		return to, err
	}
	lines := splitLines(existing)
	end := from + int64(len(lines))
	if len(lines) == 0 || end > size {
		return 0, fmt.Errorf("exported records from %d do not match the log (%d records, the log has %d)", from, len(lines), size)
	}
	if recs, err = x.Log.Records(ctx, tenant, from, end); err != nil {
		return 0, err
	}
	for i, l := range lines {
		if !bytes.Equal(l, recs[i]) {
			return 0, fmt.Errorf("exported record %d differs from the log's", from+int64(i))
		}
	}
	return end, nil
}

// exportHashes writes the stored tree hashes records [from, to) added.
func (x *Exporter) exportHashes(ctx context.Context, tenant string, from, to int64) error {
	lo, hi := tlog.StoredHashCount(from), tlog.StoredHashCount(to)
	idx := make([]int64, 0, hi-lo)
	for i := lo; i < hi; i++ {
		idx = append(idx, i)
	}
	hs, err := x.Log.HashReader(ctx, tenant).ReadHashes(idx)
	if err != nil {
		return err
	}
	data := make([]byte, 0, len(hs)*tlog.HashSize)
	for _, h := range hs {
		data = append(data, h[:]...)
	}
	existing, err := writeOnce(ctx, x.Bucket, hashesObject(tenant, from), data)
	if err == nil && existing != nil && !bytes.Equal(existing, data) {
		err = fmt.Errorf("exported tree hashes from record %d differ from the log's", from)
	}
	return err
}

// writeOnce writes an object unless it exists; then it returns the
// object's content.
func writeOnce(ctx context.Context, b *blob.Bucket, key string, data []byte) ([]byte, error) {
	err := b.WriteAll(ctx, key, data, &blob.WriterOptions{IfNotExist: true, ContentType: "application/octet-stream"})
	if gcerrors.Code(err) == gcerrors.FailedPrecondition {
		return b.ReadAll(ctx, key)
	}
	return nil, err
}

func joinLines(recs [][]byte) []byte {
	var buf bytes.Buffer
	for _, r := range recs {
		buf.Write(r)
		buf.WriteByte('\n')
	}
	return buf.Bytes()
}

func splitLines(data []byte) [][]byte {
	lines := bytes.Split(data, []byte("\n"))
	if n := len(lines); n > 0 && len(lines[n-1]) == 0 {
		lines = lines[:n-1]
	}
	return lines
}

// parseIndex reads the number an object is named by.
func parseIndex(name, ext string) (int64, bool) {
	if len(name) != 20+len(ext) || name[20:] != ext {
		return 0, false
	}
	n, err := strconv.ParseInt(name[:20], 10, 64)
	return n, err == nil && n >= 0
}
