// Keygate quick start in Go, with a client generated from proto/ by `buf generate`
// (protoc-gen-go and protoc-gen-go-grpc, into gen/go; see buf.gen.yaml).
//
// It does what docs/access-grants.md does with grpcurl, and what ../../python/quickstart.py does:
// find a card entrance in two access systems with different permission models, give Jane Doe a
// card and a mobile key for both, wait for the access systems, encode the cards, and read a typed
// error. It exits non-zero as soon as anything is not as expected, so it doubles as a check.
//
// Settings (environment):
//
//	KEYGATE_ADDR          gRPC address (default localhost:50051)
//	KEYGATE_API_KEY       API key; if unset, read from KEYGATE_API_KEY_FILE
//	KEYGATE_API_KEY_FILE  default ./keygate-data/sandbox-api-key (what `keygate serve` writes)
//	KEYGATE_TIMEOUT_SECS  how long to wait for provisioning and encoding (default 30)
//	KEYGATE_KEEP_GRANT    set to 1 to keep the grant instead of deleting it at the end
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	kg "keygate.dev/gen/go/keygate/v1"
)

const callTimeout = 10 * time.Second

const (
	card      = kg.AccessMethodMode_ACCESS_METHOD_MODE_CARD
	mobileKey = kg.AccessMethodMode_ACCESS_METHOD_MODE_MOBILE_KEY
)

// Warnings this grant may get: Salto Space's access groups open more doors than asked for, and a
// client's "now" is always a little in the past by the time the server sees it.
var expectedGrantWarnings = map[string]bool{"overprovisioned_access": true, "starts_at_in_past": true}

// checkFailed is something that was not as the quick start expects.
type checkFailed string

func check(ok bool, format string, args ...interface{}) {
	if !ok {
		panic(checkFailed(fmt.Sprintf(format, args...)))
	}
}

func logf(format string, args ...interface{}) {
	fmt.Printf("[go] "+format+"\n", args...)
}

// must fails the run on an unexpected call error.
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// bearer adds `authorization: Bearer <key>` and a deadline to every unary call.
func bearer(apiKey string) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply interface{}, cc *grpc.ClientConn,
		invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+apiKey)
		if _, ok := ctx.Deadline(); !ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, callTimeout)
			defer cancel()
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
}

func readAPIKey() string {
	if k := strings.TrimSpace(os.Getenv("KEYGATE_API_KEY")); k != "" {
		return k
	}
	path := os.Getenv("KEYGATE_API_KEY_FILE")
	if path == "" {
		path = "keygate-data/sandbox-api-key"
	}
	b, err := os.ReadFile(path)
	check(err == nil, "no KEYGATE_API_KEY and no key file at %s", path)
	return strings.TrimSpace(string(b))
}

// errorDetails decodes the google.rpc.Status of a failed call.
func errorDetails(err error) (*errdetails.ErrorInfo, *errdetails.BadRequest) {
	var info *errdetails.ErrorInfo
	var bad *errdetails.BadRequest
	for _, d := range status.Convert(err).Details() {
		switch v := d.(type) {
		case *errdetails.ErrorInfo:
			info = v
		case *errdetails.BadRequest:
			bad = v
		}
	}
	return info, bad
}

// waitFor calls poll until it returns true; fails after timeout.
func waitFor(what string, timeout time.Duration, poll func() bool) {
	deadline := time.Now().Add(timeout)
	for !poll() {
		check(time.Now().Before(deadline), "timed out after %s waiting for %s", timeout, what)
		time.Sleep(200 * time.Millisecond)
	}
}

func hasMode(modes []kg.AccessMethodMode, m kg.AccessMethodMode) bool {
	for _, x := range modes {
		if x == m {
			return true
		}
	}
	return false
}

// pickSystems returns two sandbox systems that issue mobile keys and cards needing encoding, with
// different permission models. Only virtual systems: this example must never hand out real doors.
func pickSystems(ctx context.Context, acs kg.AccessSystemServiceClient) []*kg.AccessSystem {
	var found []*kg.AccessSystem
	req := &kg.ListAccessSystemsRequest{}
	for {
		r := must(acs.ListAccessSystems(ctx, req))
		found = append(found, r.AcsSystems...)
		if r.NextPageToken == "" {
			break
		}
		req.PageToken = r.NextPageToken
	}
	logf("ListAccessSystems: %d systems", len(found))
	for _, s := range found {
		logf("  %-22s %-38s %s", s.SystemType, s.Capabilities.GetPermissionModel(), s.Name)
	}
	var chosen []*kg.AccessSystem
	for _, s := range found {
		c := s.Capabilities
		differs := true
		for _, o := range chosen {
			differs = differs && o.Capabilities.GetPermissionModel() != c.GetPermissionModel()
		}
		if s.IsVirtual && hasMode(c.GetSupportedModes(), card) && hasMode(c.GetSupportedModes(), mobileKey) &&
			c.GetIsCardEncodingRequired() && differs {
			chosen = append(chosen, s)
		}
		if len(chosen) == 2 {
			return chosen
		}
	}
	panic(checkFailed("no two virtual access systems with card encoding and different permission models" +
		" (use the API key of a sandbox workspace)"))
}

// pickEntrance returns the first room of the system that opens with a card and a mobile key.
func pickEntrance(ctx context.Context, acs kg.AccessSystemServiceClient, s *kg.AccessSystem) *kg.Entrance {
	var entrances []*kg.Entrance
	req := &kg.ListEntrancesRequest{AcsSystemId: s.AcsSystemId}
	for {
		r := must(acs.ListEntrances(ctx, req))
		entrances = append(entrances, r.AcsEntrances...)
		if r.NextPageToken == "" {
			break
		}
		req.PageToken = r.NextPageToken
	}
	check(len(entrances) > 0, "%s has no entrances", s.Name)
	for _, e := range entrances {
		check(e.AcsSystemId == s.AcsSystemId, "ListEntrances ignored its acs_system_id filter")
	}
	for _, e := range entrances {
		if e.CanUnlockWithCard && e.CanUnlockWithMobileKey && e.CanBelongToReservation {
			return e
		}
	}
	panic(checkFailed(s.Name + " has no room that opens with a card and a mobile key"))
}

func run() {
	addr := os.Getenv("KEYGATE_ADDR")
	if addr == "" {
		addr = "localhost:50051"
	}
	timeout := 30 * time.Second
	if s := os.Getenv("KEYGATE_TIMEOUT_SECS"); s != "" {
		secs, err := strconv.ParseFloat(s, 64)
		check(err == nil, "KEYGATE_TIMEOUT_SECS=%q is not a number", s)
		timeout = time.Duration(secs * float64(time.Second))
	}
	var rnd [6]byte
	must(rand.Read(rnd[:]))
	runID := hex.EncodeToString(rnd[:])
	logf("Keygate at %s, run %s", addr, runID)

	conn := must(grpc.Dial(addr,
		// Plaintext, as the quick start's server listens (grpc-go 1.33 as Debian ships it).
		grpc.WithInsecure(),
		grpc.WithUnaryInterceptor(bearer(readAPIKey()))))
	defer conn.Close()
	ctx := context.Background()
	acs := kg.NewAccessSystemServiceClient(conn)
	grantSvc := kg.NewAccessGrantServiceClient(conn)
	methodSvc := kg.NewAccessMethodServiceClient(conn)
	attemptSvc := kg.NewActionAttemptServiceClient(conn)

	// 1. Two entrances in two access systems with different permission models.
	picked := pickSystems(ctx, acs)
	systemByID := map[string]*kg.AccessSystem{}
	var doorIDs []string
	for _, s := range picked {
		e := pickEntrance(ctx, acs, s)
		logf("picked %q (%s) of %s", e.DisplayName, e.AcsEntranceId, s.Name)
		systemByID[s.AcsSystemId] = s
		doorIDs = append(doorIDs, e.AcsEntranceId)
	}

	// 2. The grant: Jane Doe inline, both doors, a card and a mobile key, for one day.
	now := time.Now()
	create := &kg.CreateAccessGrantRequest{
		RequestId: "quickstart-go-" + runID,
		Grantee: &kg.CreateAccessGrantRequest_UserIdentity{UserIdentity: &kg.NewUserIdentity{
			FullName:     "Jane Doe",
			EmailAddress: "jane.doe@example.com",
			PhoneNumber:  "+15555551000",
		}},
		AcsEntranceIds: doorIDs,
		RequestedAccessMethods: []*kg.NewRequestedAccessMethod{
			{Mode: card},
			{Mode: mobileKey},
		},
		StartsAt: timestamppb.New(now),
		EndsAt:   timestamppb.New(now.Add(24 * time.Hour)),
	}
	grant := must(grantSvc.CreateAccessGrant(ctx, create)).AccessGrant
	logf("CreateAccessGrant: %s %q", grant.AccessGrantId, grant.DisplayName)
	for _, w := range grant.Warnings {
		logf("  warning %s: %s", w.Code, w.Message)
		check(expectedGrantWarnings[w.Code], "unexpected grant warning %s", w.Code)
	}
	check(grant.InstantKeyUrl != "", "a grant with a mobile key has an instant_key_url")
	check(len(grant.Errors) == 0, "grant errors: %v", grant.Errors)
	byMode := map[kg.AccessMethodMode][]string{}
	for _, r := range grant.RequestedAccessMethods {
		byMode[r.Mode] = r.CreatedAccessMethodIds
	}
	check(len(byMode) == 2, "requested modes %v", byMode)
	check(len(byMode[card]) == 2, "one card method per access system")
	check(len(byMode[mobileKey]) == 1, "one mobile key method for both systems")
	check(len(grant.AccessMethodIds) == 3, "three access methods in all")

	// The same request_id with the same body is a replay: the first grant comes back.
	replay := must(grantSvc.CreateAccessGrant(ctx, create)).AccessGrant
	check(replay.AccessGrantId == grant.AccessGrantId, "a replayed request_id returns the same grant")
	logf("CreateAccessGrant replay with the same request_id returned the same grant")

	// 3. Wait until the mobile key is issued and both cards are ready for encoding.
	getMethod := func(id string) *kg.AccessMethod {
		return must(methodSvc.GetAccessMethod(ctx, &kg.GetAccessMethodRequest{AccessMethodId: id})).AccessMethod
	}
	var current []*kg.AccessMethod
	started := time.Now()
	waitFor("the access systems", timeout, func() bool {
		current = current[:0]
		ready := true
		for _, id := range grant.AccessMethodIds {
			m := getMethod(id)
			current = append(current, m)
			for _, e := range m.Entrances {
				check(e.State != kg.AccessState_ACCESS_STATE_FAILED, "%s failed at %s: %s",
					m.AccessMethodId, e.AcsEntranceId, e.Reason)
			}
			check(len(m.Errors) == 0, "%s errors: %v", m.AccessMethodId, m.Errors)
			switch m.Mode {
			case mobileKey:
				ready = ready && m.IsIssued
			case card:
				ready = ready && m.IsCardEncodingRequired && m.IsReadyForEncoding
			}
		}
		return ready
	})
	logf("access methods settled after %.1fs:", time.Since(started).Seconds())
	for _, m := range current {
		var states []string
		for _, e := range m.Entrances {
			states = append(states, fmt.Sprintf("%s@%s", e.State, systemByID[e.AcsSystemId].SystemType))
			check(e.State == kg.AccessState_ACCESS_STATE_GRANTED, "every entrance granted")
		}
		logf("  %-30s issued=%-5t encoding_required=%-5t [%s]",
			m.Mode, m.IsIssued, m.IsCardEncodingRequired, strings.Join(states, ", "))
		check(len(m.PendingMutations) == 0, "%s still has pending mutations", m.AccessMethodId)
		check(m.IsIssued == (m.Mode != card), "cards wait for encoding")
	}

	// 4. Encode each card on an encoder of its own access system.
	for _, c := range current {
		if c.Mode != card {
			continue
		}
		systemID := c.Entrances[0].AcsSystemId
		encoders := must(acs.ListEncoders(ctx, &kg.ListEncodersRequest{AcsSystemId: systemID})).AcsEncoders
		var encoder *kg.Encoder
		for _, e := range encoders {
			if e.IsOnline && e.AcsSystemId == systemID {
				encoder = e
				break
			}
		}
		check(encoder != nil, "no online encoder in %s", systemByID[systemID].Name)
		attempt := must(methodSvc.EncodeAccessMethod(ctx, &kg.EncodeAccessMethodRequest{
			AccessMethodId: c.AccessMethodId,
			AcsEncoderId:   encoder.AcsEncoderId,
			RequestId:      fmt.Sprintf("quickstart-go-%s-encode-%s", runID, c.AccessMethodId),
		})).ActionAttempt
		check(attempt.ActionType == kg.ActionType_ACTION_TYPE_ENCODE_CREDENTIAL, "an encode attempt")
		logf("EncodeAccessMethod on %q: %s", encoder.DisplayName, attempt.Status)

		var done *kg.ActionAttempt
		waitFor("the encoding", timeout, func() bool {
			done = must(attemptSvc.GetActionAttempt(ctx,
				&kg.GetActionAttemptRequest{ActionAttemptId: attempt.ActionAttemptId})).ActionAttempt
			return done.Status != kg.ActionAttemptStatus_ACTION_ATTEMPT_STATUS_PENDING
		})
		check(done.Status == kg.ActionAttemptStatus_ACTION_ATTEMPT_STATUS_SUCCESS,
			"encoding failed: %s %s", done.GetError().GetType(), done.GetError().GetMessage())
		check(done.GetResult().GetAcsCredentialId() != "", "a successful encoding names its credential")
		logf("  GetActionAttempt: %s, card number %s, credential %s",
			done.Status, done.Result.CardNumber, done.Result.AcsCredentialId)
		encoded := getMethod(c.AccessMethodId)
		check(encoded.IsIssued && encoded.GetIssuedAt().GetSeconds() > 0, "the encoded card is issued")
		check(!encoded.IsCardEncodingRequired, "the encoded card no longer needs encoding")
		logf("  GetAccessMethod: card for %s is_issued=true", systemByID[systemID].Name)
	}

	// 5. Errors: the google.rpc.Status details of a failed call.
	missing := "0190a6c2-0000-7000-8000-" + runID
	var trailer metadata.MD
	_, err := grantSvc.GetAccessGrant(ctx, &kg.GetAccessGrantRequest{AccessGrantId: missing}, grpc.Trailer(&trailer))
	check(err != nil, "GetAccessGrant of a random id succeeded")
	info, _ := errorDetails(err)
	logf("GetAccessGrant(%s): %s %q, ErrorInfo %s/%s, x-request-id %s", missing, status.Code(err),
		status.Convert(err).Message(), info.GetDomain(), info.GetReason(), strings.Join(trailer.Get("x-request-id"), ""))
	check(status.Code(err) == codes.NotFound, "NOT_FOUND, got %s", status.Code(err))
	check(info != nil, "a NOT_FOUND from Keygate carries an ErrorInfo")
	check(info.Reason == "ACCESS_GRANT_NOT_FOUND", "reason ACCESS_GRANT_NOT_FOUND, got %s", info.Reason)
	check(info.Domain == "keygate.dev", "domain keygate.dev, got %s", info.Domain)

	_, err = grantSvc.CreateAccessGrant(ctx, &kg.CreateAccessGrantRequest{
		Grantee: &kg.CreateAccessGrantRequest_UserIdentity{UserIdentity: &kg.NewUserIdentity{FullName: "Jane Doe"}},
	})
	check(err != nil, "CreateAccessGrant without entrances succeeded")
	info, bad := errorDetails(err)
	fields := map[string]string{}
	for _, v := range bad.GetFieldViolations() {
		fields[v.Field] = v.Description
	}
	logf("CreateAccessGrant with no entrances or modes: %s, reason %s, field violations %v",
		status.Code(err), info.GetReason(), fields)
	check(status.Code(err) == codes.InvalidArgument, "INVALID_ARGUMENT, got %s", status.Code(err))
	check(info.GetReason() == "INVALID_FIELD", "reason INVALID_FIELD")
	_, hasEntrances := fields["acs_entrance_ids"]
	_, hasModes := fields["requested_access_methods"]
	check(hasEntrances && hasModes, "violations on acs_entrance_ids and requested_access_methods, got %v", fields)

	// 6. Clean up: the delete answers at once; the grant is NOT_FOUND from then on.
	if os.Getenv("KEYGATE_KEEP_GRANT") == "1" {
		logf("keeping grant %s", grant.AccessGrantId)
	} else {
		must(grantSvc.DeleteAccessGrant(ctx, &kg.DeleteAccessGrantRequest{AccessGrantId: grant.AccessGrantId}))
		_, err := grantSvc.GetAccessGrant(ctx, &kg.GetAccessGrantRequest{AccessGrantId: grant.AccessGrantId})
		check(status.Code(err) == codes.NotFound, "deleted grant: %s", status.Code(err))
		logf("DeleteAccessGrant: %s deleted", grant.AccessGrantId)
	}
	logf("OK: quick start passed")
}

func main() {
	defer func() {
		switch r := recover().(type) {
		case nil:
		case checkFailed:
			fmt.Fprintf(os.Stderr, "[go] FAILED: %s\n", r)
			os.Exit(1)
		case error:
			info, _ := errorDetails(r)
			reason := ""
			if info != nil {
				reason = " (" + info.Reason + ")"
			}
			fmt.Fprintf(os.Stderr, "[go] FAILED: unexpected %s%s: %s\n",
				status.Code(r), reason, status.Convert(r).Message())
			os.Exit(1)
		default:
			panic(r)
		}
	}()
	run()
}
