package workers_test

import (
	"fmt"

	"github.com/patientmsg/gateway/workers"
)

// A send task carries the message id and what the worker needs to pace
// the send; the ledger holds the message. Its id is the message id, so
// queueing it twice is a no-op.
func ExampleNewSendTask() {
	t, err := workers.NewSendTask(workers.SendOptions{MessageID: "01JDA0Q9Z1Y2X3W4V5T6S7R8Q9", Channel: "sms",
		Priority: workers.PriorityCrisis, Tenant: "clinic-a", Cost: 2})
	fmt.Println(t.Type(), string(t.Payload()), workers.QueueFor(workers.PriorityCrisis), err)
	// Output: send:sms {"t":"clinic-a","c":2} gw:crisis <nil>
}
