// The login page: a token in the link's fragment (`/ui/login#token=…&next=queue`, which never
// reaches the server's logs) is posted at once; otherwise the form waits for one.
(function () {
  const params = new URLSearchParams(location.hash.slice(1));
  const query = new URLSearchParams(location.search);
  if (query.get('refused')) {
    document.getElementById('problem').textContent = 'That token was refused: ' + query.get('refused');
  }
  const next = params.get('next') || query.get('next') || '';
  document.getElementById('next').value = next;
  const token = params.get('token');
  if (token) {
    history.replaceState(null, '', location.pathname);
    const form = document.getElementById('login');
    form.elements.token.value = token;
    form.submit();
  }
})();
