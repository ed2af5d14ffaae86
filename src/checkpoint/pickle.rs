//! A small pickle VM for PyTorch's `data.pkl`: it builds values, never runs code.
//!
//! Only the opcodes `torch.save` emits (protocols 2–5) and a whitelist of globals are
//! accepted; anything else is an [`PickleError::Unsupported`] that names the opcode or
//! `module.Name`. Containers live in an arena and values refer to them by index, so memo
//! look-ups are O(1), cycles cannot leak and nothing is dropped recursively. Every read is
//! bounds-checked and every allocation grows with input actually consumed.

use std::collections::HashMap;
use std::rc::Rc;

use super::StoredDtype;

/// Largest tensor rank accepted (torch itself caps at 64).
const MAX_DIMS: usize = 64;
/// Longest storage key accepted (torch writes decimal numbers).
const MAX_KEY_LEN: usize = 256;

/// Why `data.pkl` could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PickleError {
    /// Truncated or structurally wrong pickle (maps to `ErrorKind::Checkpoint`).
    Malformed(String),
    /// An opcode or global this reader does not support (`ErrorKind::UnsupportedPickle`).
    Unsupported(String),
}

type PResult<T> = Result<T, PickleError>;

fn malformed<T>(msg: impl Into<String>) -> PResult<T> {
    Err(PickleError::Malformed(msg.into()))
}

/// A pickled value; containers are indices into [`Pickle::objs`].
#[derive(Debug, Clone)]
pub(crate) enum Value {
    Int(i64),
    Str(Rc<str>),
    Obj(usize),
    /// A value a state dict never needs (None, bool, float, bytes, big int).
    Other,
}

/// The globals a checkpoint may reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    OrderedDict,
    RebuildTensorV2,
    RebuildParameter,
    RebuildParameterWithState,
    Storage(StoredDtype),
    Size,
}

/// The whitelist: `(module, name, class)`.
const CLASSES: [(&str, &str, Class); 13] = [
    ("collections", "OrderedDict", Class::OrderedDict),
    ("torch._utils", "_rebuild_tensor_v2", Class::RebuildTensorV2),
    ("torch._utils", "_rebuild_parameter", Class::RebuildParameter),
    ("torch._utils", "_rebuild_parameter_with_state", Class::RebuildParameterWithState),
    ("torch", "Size", Class::Size),
    ("torch", "FloatStorage", Class::Storage(StoredDtype::F32)),
    ("torch", "HalfStorage", Class::Storage(StoredDtype::F16)),
    ("torch", "BFloat16Storage", Class::Storage(StoredDtype::BF16)),
    ("torch", "DoubleStorage", Class::Storage(StoredDtype::F64)),
    ("torch", "LongStorage", Class::Storage(StoredDtype::I64)),
    ("torch", "IntStorage", Class::Storage(StoredDtype::I32)),
    ("torch", "ByteStorage", Class::Storage(StoredDtype::U8)),
    ("torch", "BoolStorage", Class::Storage(StoredDtype::Bool)),
];

impl Class {
    fn resolve(module: &str, name: &str) -> Option<Class> {
        CLASSES.iter().find(|(m, n, _)| *m == module && *n == name).map(|c| c.2)
    }

    fn name(self) -> String {
        CLASSES.iter().find(|c| c.2 == self).map(|(m, n, _)| format!("{m}.{n}")).unwrap_or_default()
    }
}

/// A storage named by a persistent id: entry `data/<key>` of the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StorageRef {
    pub key: Rc<str>,
    pub dtype: StoredDtype,
}

/// A tensor view onto a storage (offset and strides in elements).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TensorRef {
    pub storage: StorageRef,
    pub offset: usize,
    pub shape: Vec<usize>,
    pub stride: Vec<usize>,
}

/// An arena object.
pub(crate) enum Obj {
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Class(Class),
    Storage(StorageRef),
    Tensor(TensorRef),
}

/// The result of running a pickle: the arena and the unpickled value.
pub(crate) struct Pickle {
    pub objs: Vec<Obj>,
    pub root: Value,
}

/// Parse a whole pickle.
pub(crate) fn parse(data: &[u8]) -> PResult<Pickle> {
    let mut vm = Vm { data, pos: 0, stack: Vec::new(), metastack: Vec::new(), memo: HashMap::new(), objs: Vec::new() };
    let root = vm.run()?;
    Ok(Pickle { objs: vm.objs, root })
}

impl Pickle {
    /// The items of `v` if it is a dict.
    pub fn dict(&self, v: &Value) -> Option<&[(Value, Value)]> {
        let Value::Obj(i) = v else { return None };
        match self.objs.get(*i) {
            Some(Obj::Dict(items)) => Some(items),
            _ => None,
        }
    }
}

struct Vm<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    metastack: Vec<Vec<Value>>,
    memo: HashMap<u32, Value>,
    objs: Vec<Obj>,
}

impl<'a> Vm<'a> {
    fn take(&mut self, n: usize) -> PResult<&'a [u8]> {
        let data: &'a [u8] = self.data;
        match self.pos.checked_add(n).and_then(|end| data.get(self.pos..end)) {
            Some(s) => {
                self.pos += n;
                Ok(s)
            }
            None => malformed(format!("truncated pickle: {n} more bytes needed at byte {}", self.pos)),
        }
    }

    fn arr<const N: usize>(&mut self) -> PResult<[u8; N]> {
        self.take(N).map(|s| s.try_into().unwrap_or([0; N]))
    }

    fn u8(&mut self) -> PResult<u8> {
        Ok(self.arr::<1>()?[0])
    }

    fn u32(&mut self) -> PResult<u32> {
        Ok(u32::from_le_bytes(self.arr()?))
    }

    /// An 8-byte length (too large ones saturate, so `take` refuses them).
    fn len8(&mut self) -> PResult<usize> {
        Ok(usize::try_from(u64::from_le_bytes(self.arr()?)).unwrap_or(usize::MAX))
    }

    fn line(&mut self) -> PResult<&'a str> {
        let data: &'a [u8] = self.data;
        let rest = data.get(self.pos..).unwrap_or_default();
        let Some(n) = rest.iter().position(|&b| b == b'\n') else {
            return malformed("truncated pickle: GLOBAL without a newline");
        };
        let s = self.take(n)?;
        self.pos += 1;
        std::str::from_utf8(s).or_else(|_| malformed("GLOBAL name is not UTF-8"))
    }

    fn string(&mut self, n: usize) -> PResult<Value> {
        let at = self.pos;
        let s = self.take(n)?;
        match std::str::from_utf8(s) {
            Ok(s) => Ok(Value::Str(Rc::from(s))),
            Err(_) => malformed(format!("string at byte {at} is not UTF-8")),
        }
    }

    fn new_obj(&mut self, o: Obj) -> Value {
        self.objs.push(o);
        Value::Obj(self.objs.len() - 1)
    }

    fn pop(&mut self) -> PResult<Value> {
        self.stack.pop().ok_or_else(|| PickleError::Malformed(format!("pickle stack underflow at byte {}", self.pos)))
    }

    fn pop_mark(&mut self) -> PResult<Vec<Value>> {
        let prev = self.metastack.pop();
        let prev =
            prev.ok_or_else(|| PickleError::Malformed(format!("no MARK for the opcode before byte {}", self.pos)))?;
        Ok(std::mem::replace(&mut self.stack, prev))
    }

    fn top(&self) -> PResult<&Value> {
        self.stack.last().ok_or_else(|| PickleError::Malformed(format!("pickle stack underflow at byte {}", self.pos)))
    }

    /// The arena object on top of the stack, if the top is one.
    fn top_obj(&mut self) -> PResult<Option<&mut Obj>> {
        let idx = match self.top()? {
            Value::Obj(i) => *i,
            _ => usize::MAX,
        };
        Ok(self.objs.get_mut(idx))
    }

    fn memo_get(&self, idx: u32) -> PResult<Value> {
        self.memo.get(&idx).cloned().ok_or_else(|| PickleError::Malformed(format!("pickle memo has no entry {idx}")))
    }

    fn memo_put(&mut self, idx: u32) -> PResult<()> {
        let v = self.top()?.clone();
        self.memo.insert(idx, v);
        Ok(())
    }

    fn run(&mut self) -> PResult<Value> {
        loop {
            let at = self.pos;
            let op = self.u8().or_else(|_| malformed("truncated pickle: no STOP opcode"))?;
            let push = match op {
                0x80 => match self.u8()? {
                    0..=5 => None,
                    v => return Err(PickleError::Unsupported(format!("unsupported pickle protocol {v}"))),
                },
                0x95 => self.take(8).map(|_| None)?, // FRAME: a length hint only
                b'.' => return self.pop(),
                b'(' => {
                    let prev = std::mem::take(&mut self.stack);
                    self.metastack.push(prev);
                    None
                }
                b'}' => Some(self.new_obj(Obj::Dict(Vec::new()))),
                b']' => Some(self.new_obj(Obj::List(Vec::new()))),
                b')' => Some(self.new_obj(Obj::Tuple(Vec::new()))),
                b'N' | 0x88 | 0x89 => Some(Value::Other),
                b'J' => Some(Value::Int(i32::from_le_bytes(self.arr()?).into())),
                b'K' => Some(Value::Int(self.u8()?.into())),
                b'M' => Some(Value::Int(u16::from_le_bytes(self.arr()?).into())),
                0x8a | 0x8b => {
                    let n = if op == 0x8a { self.u8()?.into() } else { self.u32()? as usize };
                    Some(long_value(self.take(n)?))
                }
                b'G' => self.take(8).map(|_| Some(Value::Other))?,
                b'X' | b'T' => self.u32().and_then(|n| self.string(n as usize)).map(Some)?,
                0x8c | b'U' => self.u8().and_then(|n| self.string(n.into())).map(Some)?,
                0x8d => self.len8().and_then(|n| self.string(n)).map(Some)?,
                b'B' => self.u32().and_then(|n| self.take(n as usize)).map(|_| Some(Value::Other))?,
                b'C' => self.u8().and_then(|n| self.take(n.into())).map(|_| Some(Value::Other))?,
                0x8e => self.len8().and_then(|n| self.take(n)).map(|_| Some(Value::Other))?,
                b't' => self.pop_mark().map(|items| Some(self.new_obj(Obj::Tuple(items))))?,
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    let Some(start) = self.stack.len().checked_sub(n) else {
                        return malformed(format!("pickle stack underflow at byte {at}"));
                    };
                    let items = self.stack.split_off(start);
                    Some(self.new_obj(Obj::Tuple(items)))
                }
                b'l' => self.pop_mark().map(|items| Some(self.new_obj(Obj::List(items))))?,
                b'd' => {
                    let items = pairs(self.pop_mark()?)?;
                    Some(self.new_obj(Obj::Dict(items)))
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    Some(self.global(module, name)?)
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Value::Str(m), Value::Str(n)) = (&module, &name) else {
                        return malformed(format!("STACK_GLOBAL at byte {at} without two strings"));
                    };
                    Some(self.global(m, n)?)
                }
                b'R' | 0x81 => {
                    let args = self.pop()?;
                    let func = self.pop()?;
                    Some(self.call(&func, &args)?)
                }
                b'Q' => {
                    let pid = self.pop()?;
                    Some(self.persistent_load(&pid)?)
                }
                b'b' => {
                    // Attribute state (e.g. a state dict's `_metadata`) is not needed.
                    self.pop()?;
                    match self.top_obj()? {
                        Some(Obj::Dict(_) | Obj::Tensor(_)) => None,
                        _ => return malformed(format!("BUILD at byte {at} on an unsupported object")),
                    }
                }
                b's' | b'u' => {
                    let items = if op == b's' {
                        let v = self.pop()?;
                        vec![(self.pop()?, v)]
                    } else {
                        pairs(self.pop_mark()?)?
                    };
                    match self.top_obj()? {
                        Some(Obj::Dict(d)) => d.extend(items),
                        _ => return malformed(format!("SETITEM at byte {at} on a non-dict")),
                    }
                    None
                }
                b'a' | b'e' => {
                    let items = if op == b'a' { vec![self.pop()?] } else { self.pop_mark()? };
                    match self.top_obj()? {
                        Some(Obj::List(l)) => l.extend(items),
                        _ => return malformed(format!("APPEND at byte {at} on a non-list")),
                    }
                    None
                }
                b'q' => self.u8().and_then(|i| self.memo_put(i.into())).map(|_| None)?,
                b'r' => self.u32().and_then(|i| self.memo_put(i)).map(|_| None)?,
                0x94 => self.memo_put(u32::try_from(self.memo.len()).unwrap_or(u32::MAX)).map(|_| None)?,
                b'h' => Some(self.u8().and_then(|i| self.memo_get(i.into()))?),
                b'j' => Some(self.u32().and_then(|i| self.memo_get(i))?),
                b'0' => match self.stack.pop() {
                    Some(_) => None,
                    None => self.pop_mark().map(|_| None)?,
                },
                b'1' => self.pop_mark().map(|_| None)?,
                b'2' => Some(self.top()?.clone()),
                _ => {
                    let name = REFUSED.iter().find(|r| r.0 == op).map_or("(not a pickle opcode)", |r| r.1);
                    let msg = format!("unsupported pickle opcode 0x{op:02x} {name} at byte {at}");
                    return Err(PickleError::Unsupported(msg));
                }
            };
            if let Some(v) = push {
                self.stack.push(v);
            }
        }
    }

    fn global(&mut self, module: &str, name: &str) -> PResult<Value> {
        match Class::resolve(module, name) {
            Some(c) => Ok(self.new_obj(Obj::Class(c))),
            None => {
                let full: String = format!("{module}.{name}").chars().take(200).collect();
                let msg = format!("class {} is not allowed (not in the checkpoint whitelist)", full.escape_debug());
                Err(PickleError::Unsupported(msg))
            }
        }
    }

    fn obj(&self, v: &Value) -> Option<&Obj> {
        match v {
            Value::Obj(i) => self.objs.get(*i),
            _ => None,
        }
    }

    /// The items of a tuple of at most `max` values.
    fn small_tuple(&self, v: &Value, max: usize, what: &str) -> PResult<Vec<Value>> {
        match self.obj(v) {
            Some(Obj::Tuple(items)) if items.len() <= max => Ok(items.clone()),
            Some(Obj::Tuple(items)) => malformed(format!("{what}: {} items, at most {max} expected", items.len())),
            _ => malformed(format!("{what}: a tuple was expected")),
        }
    }

    fn usize_tuple(&self, v: &Value, what: &str) -> PResult<Vec<usize>> {
        self.small_tuple(v, MAX_DIMS, what)?.iter().map(|x| to_usize(x, what)).collect()
    }

    fn call(&mut self, func: &Value, args: &Value) -> PResult<Value> {
        let Some(Obj::Class(class)) = self.obj(func) else {
            return malformed(format!("REDUCE on a non-callable before byte {}", self.pos));
        };
        let class = *class;
        let args = self.small_tuple(args, 8, "call arguments")?;
        match class {
            Class::OrderedDict if args.is_empty() => Ok(self.new_obj(Obj::Dict(Vec::new()))),
            Class::OrderedDict => malformed("collections.OrderedDict called with arguments"),
            Class::RebuildTensorV2 => {
                if !(6..=7).contains(&args.len()) {
                    return malformed(format!("_rebuild_tensor_v2 with {} arguments", args.len()));
                }
                let Some(Obj::Storage(storage)) = self.obj(&args[0]) else {
                    return malformed("_rebuild_tensor_v2 without a storage");
                };
                let storage = storage.clone();
                let offset = to_usize(&args[1], "storage offset")?;
                let shape = self.usize_tuple(&args[2], "tensor size")?;
                let stride = self.usize_tuple(&args[3], "tensor stride")?;
                if shape.len() != stride.len() {
                    return malformed(format!("tensor size {shape:?} and stride {stride:?} differ in rank"));
                }
                Ok(self.new_obj(Obj::Tensor(TensorRef { storage, offset, shape, stride })))
            }
            Class::RebuildParameter | Class::RebuildParameterWithState => match args.first() {
                Some(v) if matches!(self.obj(v), Some(Obj::Tensor(_))) => Ok(v.clone()),
                _ => malformed("_rebuild_parameter without a tensor"),
            },
            Class::Size => match args.as_slice() {
                [dims] => {
                    let dims = self.small_tuple(dims, MAX_DIMS, "torch.Size")?;
                    Ok(self.new_obj(Obj::Tuple(dims)))
                }
                _ => malformed("torch.Size needs one tuple"),
            },
            Class::Storage(_) => {
                Err(PickleError::Unsupported(format!("calling class {} is not supported", class.name())))
            }
        }
    }

    /// `('storage', torch.XStorage, key, location, numel)` → a storage reference.
    fn persistent_load(&mut self, pid: &Value) -> PResult<Value> {
        let items = self.small_tuple(pid, 5, "persistent id")?;
        let [Value::Str(tag), ty, Value::Str(key), _location, numel] = items.as_slice() else {
            return malformed("persistent id is not ('storage', type, key, location, numel)");
        };
        if &**tag != "storage" {
            return malformed(format!("persistent id of kind '{}'", tag.escape_debug()));
        }
        let Some(Obj::Class(Class::Storage(dtype))) = self.obj(ty) else {
            return malformed("persistent id without a storage type");
        };
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return malformed(format!("storage key of {} bytes", key.len()));
        }
        to_usize(numel, "storage size")?;
        let storage = StorageRef { key: key.clone(), dtype: *dtype };
        Ok(self.new_obj(Obj::Storage(storage)))
    }
}

fn to_usize(v: &Value, what: &str) -> PResult<usize> {
    match v {
        Value::Int(i) => usize::try_from(*i).or_else(|_| malformed(format!("{what} {i} is negative"))),
        _ => malformed(format!("{what} is not an integer")),
    }
}

fn pairs(items: Vec<Value>) -> PResult<Vec<(Value, Value)>> {
    if !items.len().is_multiple_of(2) {
        return malformed("dict items come in an odd number");
    }
    let mut it = items.into_iter();
    let mut out = Vec::with_capacity(it.len() / 2);
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}

/// Little-endian two's-complement integer of LONG1/LONG4.
fn long_value(b: &[u8]) -> Value {
    if b.len() > 8 {
        return Value::Other;
    }
    let fill = if b.last().is_some_and(|&x| x & 0x80 != 0) { 0xff } else { 0 };
    let mut a = [fill; 8];
    a[..b.len()].copy_from_slice(b);
    Value::Int(i64::from_le_bytes(a))
}

/// Opcodes this VM refuses, named for error messages.
const REFUSED: [(u8, &str); 20] = [
    (b'F', "FLOAT"),
    (b'I', "INT"),
    (b'L', "LONG"),
    (b'P', "PERSID"),
    (b'S', "STRING"),
    (b'V', "UNICODE"),
    (b'g', "GET"),
    (b'p', "PUT"),
    (b'i', "INST"),
    (b'o', "OBJ"),
    (0x82, "EXT1"),
    (0x83, "EXT2"),
    (0x84, "EXT4"),
    (0x8f, "EMPTY_SET"),
    (0x90, "ADDITEMS"),
    (0x91, "FROZENSET"),
    (0x92, "NEWOBJ_EX"),
    (0x96, "BYTEARRAY8"),
    (0x97, "NEXT_BUFFER"),
    (0x98, "READONLY_BUFFER"),
];
