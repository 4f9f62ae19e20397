package twiliosim

import (
	"encoding/binary"
	"math"
)

// Recording media format: what Twilio's .wav media of a mono call
// recording is, 8 kHz 16-bit PCM.
const (
	// RecordingContentType is the Content-Type Twilio serves .wav media with.
	RecordingContentType = "audio/x-wav"
	recordingRate        = 8000
	recordingBits        = 16
	toneHz               = 440
)

// ToneWAV returns the media of a simulated recording: a RIFF/WAVE file, 8
// kHz 16-bit mono PCM, holding a 440 Hz sine tone of the given length in
// seconds (at least one). The bytes depend only on seconds, so tests can
// compare a download with ToneWAV(duration).
func ToneWAV(seconds int) []byte {
	seconds = max(seconds, 1)
	samples := seconds * recordingRate
	dataLen := samples * recordingBits / 8
	b := make([]byte, 44+dataLen)
	le := binary.LittleEndian
	copy(b[0:], "RIFF")
	le.PutUint32(b[4:], uint32(36+dataLen))
	copy(b[8:], "WAVE")
	copy(b[12:], "fmt ")
	le.PutUint32(b[16:], 16)                            // fmt chunk size
	le.PutUint16(b[20:], 1)                             // PCM
	le.PutUint16(b[22:], 1)                             // mono
	le.PutUint32(b[24:], recordingRate)                 // sample rate
	le.PutUint32(b[28:], recordingRate*recordingBits/8) // byte rate
	le.PutUint16(b[32:], recordingBits/8)               // block align
	le.PutUint16(b[34:], recordingBits)                 // bits per sample
	copy(b[36:], "data")
	le.PutUint32(b[40:], uint32(dataLen))
	for i := range samples {
		v := int16(0.3 * math.MaxInt16 * math.Sin(2*math.Pi*toneHz*float64(i)/recordingRate))
		le.PutUint16(b[44+2*i:], uint16(v))
	}
	return b
}
