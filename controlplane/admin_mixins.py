"""Admin building blocks shared by the apps."""

from django.contrib import admin
from django.core.exceptions import ImproperlyConfigured

from .errors import DomainError


class ReadOnlyAdmin(admin.ModelAdmin):
    """For append-only records (audit logs, analyses, alerts): shown, never changed here."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ReadOnlyInline(admin.TabularInline):
    """The rows of an append-only log under their parent: shown, never added or changed."""

    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class ServiceFormMixin:
    """A model form whose object is created or changed by a service, once the form is valid.

    Django's own checks run first: the fields, `clean()`, and the model's validation of the
    form's instance. Then `service_call(cleaned_data)` makes the change and returns the object.
    The service's validation happens there, so a `DomainError` it raises becomes the form's
    errors: its messages at the fields it names that the form has, and its sentence (the one
    the API answers with) above the form unless a field shows it already. Nothing is created
    when any check fails, and a failed service call leaves nothing behind.

    `save()` returns the service's object without saving it again; the admin's side is
    `ServiceAdminMixin`. `self.request` is the admin's request, to name who acted.
    Put the mixin before `forms.ModelForm` in the bases.
    """

    def __init__(self, *args, request=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.request = request
        self.service_result = None

    def service_call(self, cleaned_data):
        """Create or change the object through its service and return it."""
        raise NotImplementedError(f"{type(self).__name__} must define service_call().")

    def full_clean(self):
        super().full_clean()
        if not self.is_bound or self.errors or (self.empty_permitted and not self.has_changed()):
            return
        try:
            self.service_result = self.service_call(self.cleaned_data)
        except DomainError as error:
            self._service_error_add(error)
            return
        self.instance = self.service_result

    def _service_error_add(self, error: DomainError) -> None:
        shown = False
        for name, messages in (error.fields or {}).items():
            if name in self.fields:
                self.add_error(name, list(messages))
                shown = shown or error.detail in messages
        if not shown:
            self.add_error(None, error.detail)

    def save(self, commit=True):
        """The object the service created or changed: saved already, whatever `commit` says."""
        if self.service_result is None:
            raise ValueError(f"{type(self).__name__} was not valid: the service made nothing.")
        return self.service_result

    def save_m2m(self):
        """Nothing to do: the service saved whatever belongs to the object."""


class ServiceAdminMixin:
    """A ModelAdmin that changes state only through services, never by saving rows itself.

    Its add and change forms are `ServiceFormMixin` forms, which get the request; by the time
    the admin would save, the form's service has, so `save_model` saves nothing. Deleting goes
    through `service_delete(obj)`, one object at a time (the bulk action too); an admin that
    defines none must refuse deleting (`has_delete_permission`).
    Put the mixin before `admin.ModelAdmin` in the bases.
    """

    def get_form(self, request, obj=None, **kwargs):
        form = super().get_form(request, obj, **kwargs)
        if not issubclass(form, ServiceFormMixin):
            return form  # a view without editable fields: it never saves

        class RequestForm(form):
            def __init__(self, *args, **kw):
                super().__init__(*args, request=request, **kw)

        RequestForm.__name__ = form.__name__
        return RequestForm

    def save_model(self, request, obj, form, change):
        if not isinstance(form, ServiceFormMixin):
            raise ImproperlyConfigured(
                f"{type(self).__name__} saves through services: its forms must be "
                "ServiceFormMixin forms."
            )
        # Saved by the form's service already.

    def delete_model(self, request, obj):
        self.service_delete(obj)

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            self.service_delete(obj)

    def service_delete(self, obj):
        raise ImproperlyConfigured(
            f"{type(self).__name__} deletes through a service: define service_delete(), "
            "or refuse deleting in has_delete_permission()."
        )
