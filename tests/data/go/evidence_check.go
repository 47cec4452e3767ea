// Checks a trailkeep evidence file (`GET /ui/events/{stream}/{seq}/evidence.json`)
// with Go's golang.org/x/mod/sumdb/note and sumdb/tlog, independently of
// trailkeep's own code: the checkpoint's signature with the pinned verifier
// key, then the event's inclusion in that checkpoint's tree.
//
// usage: go run evidence_check.go EVIDENCE.json VERIFIER_KEY_FILE
// Exit 0 and "ok ..." when both hold; 1 with the reason otherwise.
package main

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

type evidence struct {
	Stream     string `json:"stream"`
	Seq        int64  `json:"seq"`
	Event      string `json:"event"`
	Checkpoint string `json:"checkpoint"`
	Proof      struct {
		Size   int64    `json:"size"`
		Hashes []string `json:"hashes"`
	} `json:"proof"`
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "evidence_check: "+format+"\n", args...)
	os.Exit(1)
}

func hash32(b []byte, what string) tlog.Hash {
	var h tlog.Hash
	if len(b) != len(h) {
		fail("%s: %d bytes, want %d", what, len(b), len(h))
	}
	copy(h[:], b)
	return h
}

func main() {
	if len(os.Args) != 3 {
		fail("usage: evidence_check EVIDENCE.json VERIFIER_KEY_FILE")
	}
	raw, err := os.ReadFile(os.Args[1])
	if err != nil {
		fail("%v", err)
	}
	var ev evidence
	if err := json.Unmarshal(raw, &ev); err != nil {
		fail("evidence: %v", err)
	}
	key, err := os.ReadFile(os.Args[2])
	if err != nil {
		fail("%v", err)
	}
	verifier, err := note.NewVerifier(strings.TrimSpace(string(key)))
	if err != nil {
		fail("verifier key: %v", err)
	}
	n, err := note.Open([]byte(ev.Checkpoint), note.VerifierList(verifier))
	if err != nil {
		fail("checkpoint signature: %v", err)
	}
	// C2SP checkpoint body: origin, size, base64 root, then extensions.
	lines := strings.Split(n.Text, "\n")
	if len(lines) < 4 {
		fail("checkpoint body has %d lines", len(lines))
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || size != ev.Proof.Size {
		fail("checkpoint size %q, proof size %d", lines[1], ev.Proof.Size)
	}
	rootBytes, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil {
		fail("checkpoint root: %v", err)
	}
	root := hash32(rootBytes, "checkpoint root")
	// The leaf is the RFC 9162 record hash of the event's hash.
	var stored struct {
		Hash string `json:"hash"`
	}
	if err := json.Unmarshal([]byte(ev.Event), &stored); err != nil {
		fail("event: %v", err)
	}
	eventHash, err := hex.DecodeString(stored.Hash)
	if err != nil {
		fail("event hash: %v", err)
	}
	leaf := tlog.RecordHash(eventHash)
	var proof tlog.RecordProof
	for i, h := range ev.Proof.Hashes {
		b, err := base64.StdEncoding.DecodeString(h)
		if err != nil {
			fail("proof hash %d: %v", i, err)
		}
		proof = append(proof, hash32(b, "proof hash"))
	}
	if err := tlog.CheckRecord(proof, size, root, ev.Seq-1, leaf); err != nil {
		fail("inclusion of seq %d in size %d: %v", ev.Seq, size, err)
	}
	fmt.Printf("ok %s seq %d in checkpoint size %d signed by %s\n", ev.Stream, ev.Seq, size, n.Sigs[0].Name)
}
