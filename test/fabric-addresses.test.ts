// The fabric's address map: devices that name peers by a network address (RoCE GIDs) find the peer's port by it.
import test from 'ava';
import { Fabric } from '../emulator/datapath/fabric';

const endpoint = async () => null;

test('an address bound by a port resolves to that port, and leaves with it when the port detaches', (t) => {
  const f = new Fabric();
  const a = f.attach(endpoint);
  const b = f.attach(endpoint);
  f.bindAddress(a, 'gid-a');
  f.bindAddress(b, 'gid-b');
  t.is(f.resolve('gid-a'), a);
  t.is(f.resolve('gid-b'), b);
  f.detach(a);
  t.is(f.resolve('gid-a'), undefined);
  t.is(f.resolve('gid-b'), b);
});

test('a port cannot unbind an address another port holds, and an unattached LID binds nothing', (t) => {
  const f = new Fabric();
  const a = f.attach(endpoint);
  const b = f.attach(endpoint);
  f.bindAddress(a, 'shared');
  f.bindAddress(b, 'shared');
  f.unbindAddress(a, 'shared');
  t.is(f.resolve('shared'), b);
  f.bindAddress(99, 'ghost');
  t.is(f.resolve('ghost'), undefined);
});
