// The client protocol: request and response frames decode or throw `WireError`, never trap;
// whatever decodes encodes to a frame that decodes to the same request or response.
//
// Input: see `runStreamFuzzer`. The server decodes requests, `PaxosClient` responses: both are
// fuzzed from the one stream, by frame type.
import FuzzSupport
import NIOCore
import PaxosTransport
import WireFuzzSupport

runStreamFuzzer { frame in
    var body = frame.payload
    switch frame.type {
    case .request:
        guard let request = try? ClientRequestFrame.decode(&body) else { return }
        var again = reframe(.request(request)).payload
        fuzzCheck((try? ClientRequestFrame.decode(&again)) == request, "request round trip of \(request)")
    case .response:
        guard let response = try? ClientResponseFrame.decode(&body) else { return }
        var again = reframe(.response(response)).payload
        fuzzCheck((try? ClientResponseFrame.decode(&again)) == response, "response round trip of \(response)")
    default:
        return
    }
}
